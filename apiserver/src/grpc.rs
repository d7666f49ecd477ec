//! gRPC glue: tonic handlers that unwrap the request, take the caller's identity from the
//! authentication layer, call [`crate::service::Api`] and convert its errors once.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::{Stream, StreamExt};
use rudder_proto as pb;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::service::Identity;

use crate::auth::identity;
use crate::auth::secure::Secured;
use crate::service::Api;

/// Serves every gRPC service over one [`Api`].
#[derive(Clone)]
pub struct GrpcApi {
    api: Api,
    /// The CA and settings of a secured port, for signing certificates.
    secured: Option<Arc<Secured>>,
}

impl GrpcApi {
    pub fn new(api: Api, secured: Option<Arc<Secured>>) -> Self {
        GrpcApi { api, secured }
    }

    /// The caller, once allowed to `verb` the non-resource `path`.
    fn caller_at<T>(&self, req: &Request<T>, verb: &str, path: &str) -> Result<Identity, Status> {
        let id = identity(req)?;
        self.api.authorize_path(&id, verb, path)?;
        Ok(id)
    }
}

macro_rules! unary {
    ($self:ident, $req:ident, $method:ident) => {{
        let id = identity(&$req)?;
        Ok(Response::new(
            $self.api.$method(&id, $req.into_inner()).await?,
        ))
    }};
}

/// A write's answer from a replicated follower says so (`rudder-follower` metadata), so a
/// client that knows several masters moves its writes toward the leader, saving the hop.
macro_rules! write {
    ($self:ident, $req:ident, $method:ident) => {{
        let id = identity(&$req)?;
        let mut r = Response::new($self.api.$method(&id, $req.into_inner()).await?);
        if $self.api.store().forwards_writes() {
            r.metadata_mut().insert(
                rudder_proto::FOLLOWER_METADATA,
                tonic::metadata::MetadataValue::from_static("1"),
            );
        }
        Ok(r)
    }};
}

#[tonic::async_trait]
impl pb::resources_server::Resources for GrpcApi {
    async fn create(
        &self,
        req: Request<pb::CreateRequest>,
    ) -> Result<Response<pb::Object>, Status> {
        write!(self, req, create)
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::Object>, Status> {
        unary!(self, req, get)
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        unary!(self, req, list)
    }

    async fn update(
        &self,
        req: Request<pb::UpdateRequest>,
    ) -> Result<Response<pb::Object>, Status> {
        write!(self, req, update)
    }

    async fn update_status(
        &self,
        req: Request<pb::UpdateRequest>,
    ) -> Result<Response<pb::Object>, Status> {
        write!(self, req, update_status)
    }

    async fn finalize(
        &self,
        req: Request<pb::UpdateRequest>,
    ) -> Result<Response<pb::Object>, Status> {
        write!(self, req, finalize)
    }

    async fn patch(&self, req: Request<pb::PatchRequest>) -> Result<Response<pb::Object>, Status> {
        write!(self, req, patch)
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        write!(self, req, delete)
    }

    async fn bind(&self, req: Request<pb::BindRequest>) -> Result<Response<pb::Object>, Status> {
        write!(self, req, bind)
    }

    async fn evict(
        &self,
        req: Request<pb::EvictRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        write!(self, req, evict)
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEvent, Status>> + Send + 'static>>;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let id = identity(&req)?;
        let rx = self.api.watch(&id, req.into_inner()).await?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx).map(Ok))))
    }
}

#[tonic::async_trait]
impl pb::discovery_server::Discovery for GrpcApi {
    async fn api_resources(
        &self,
        req: Request<pb::DiscoveryRequest>,
    ) -> Result<Response<pb::DiscoveryResponse>, Status> {
        self.caller_at(&req, "get", "/apis")?;
        // Every served version; names resolve to the storage version, so it is the preferred one.
        let resources = self
            .api
            .registry()
            .served()
            .map(|k| pb::ApiResource {
                group: k.group.to_string(),
                version: k.version.to_string(),
                kind: k.kind.to_string(),
                plural: k.plural.to_string(),
                singular: k.singular.to_string(),
                short_names: k.short_names.iter().map(|s| s.to_string()).collect(),
                namespaced: k.namespaced,
                has_status: k.has_status,
                preferred: k.is_storage(),
                storage_version: k.storage_version.to_string(),
            })
            .collect();
        Ok(Response::new(pb::DiscoveryResponse { resources }))
    }
}

#[tonic::async_trait]
impl pb::health_server::Health for GrpcApi {
    async fn check(
        &self,
        req: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::HealthResponse>, Status> {
        self.caller_at(&req, "get", "/healthz")?;
        let (status, writable) = match self.api.store().writable() {
            Ok(()) => ("ok".to_string(), true),
            Err(reason) => (reason, false),
        };
        Ok(Response::new(pb::HealthResponse { status, writable }))
    }

    async fn version(
        &self,
        req: Request<pb::VersionRequest>,
    ) -> Result<Response<pb::VersionResponse>, Status> {
        self.caller_at(&req, "get", "/version")?;
        Ok(Response::new(pb::VersionResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
            git_commit: option_env!("RUDDER_GIT_COMMIT")
                .unwrap_or("unknown")
                .to_string(),
            kubernetes_schema: rudder_api::KUBERNETES_SCHEMA.to_string(),
        }))
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for GrpcApi {
    async fn stats(
        &self,
        req: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        self.caller_at(&req, "get", "/admin/stats")?;
        let s = self.api.store().stats();
        Ok(Response::new(pb::StatsResponse {
            resource_version: s.resource_version,
            object_count: s.objects,
            store_size_bytes: s.size_on_disk,
            disk_free_bytes: s.disk_free,
            history_oldest_version: s.history_oldest,
            history_events: s.history_events,
            watchers: self.api.watch_count(),
            writable: s.unwritable_reason.is_none(),
            unwritable_reason: s.unwritable_reason.unwrap_or_default(),
            commits: s.commits,
            committed_writes: s.committed_writes,
            raft: self.api.store().raft().map(crate::replica::status),
            alarms: self.api.health.alarms(),
            last_backup: self.api.health.last_backup(),
        }))
    }

    async fn save_backup(
        &self,
        req: Request<pb::SaveBackupRequest>,
    ) -> Result<Response<pb::Backup>, Status> {
        self.caller_at(&req, "get", "/admin/backup")?;
        let b = self
            .api
            .store()
            .backup()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(pb::Backup {
            data: b.data.into(),
            resource_version: b.resource_version,
            objects: b.objects,
        }))
    }

    async fn members(
        &self,
        req: Request<pb::MembersRequest>,
    ) -> Result<Response<pb::RaftStatus>, Status> {
        self.caller_at(&req, "get", "/admin/members")?;
        let raft = self.api.store().raft().ok_or_else(not_replicated)?;
        Ok(Response::new(crate::replica::status(raft)))
    }

    async fn change_members(
        &self,
        req: Request<pb::ChangeMembersRequest>,
    ) -> Result<Response<pb::RaftStatus>, Status> {
        self.caller_at(&req, "update", "/admin/members")?;
        let r = req.into_inner();
        let store = self.api.store();
        if store.raft().is_none() {
            return Err(not_replicated());
        }
        if r.id == 0 {
            return Err(Status::invalid_argument(
                "id: a member id is a positive number",
            ));
        }
        let change = match r.op.as_str() {
            "add" => {
                if r.address
                    .rsplit_once(':')
                    .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
                {
                    return Err(Status::invalid_argument(format!(
                        "address: {:?} is not HOST:PORT (the new member's Raft port)",
                        r.address
                    )));
                }
                crate::replica::network::MemberChange::Add {
                    id: r.id,
                    addr: r.address,
                    learner: r.learner,
                }
            }
            "remove" => crate::replica::network::MemberChange::Remove { id: r.id },
            other => {
                return Err(Status::invalid_argument(format!(
                    "op: {other:?} is not \"add\" or \"remove\""
                )));
            }
        };
        store
            .change_members(change)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let raft = store.raft().ok_or_else(not_replicated)?;
        Ok(Response::new(crate::replica::status(raft)))
    }

    async fn sign_certificate(
        &self,
        req: Request<pb::SignCertificateRequest>,
    ) -> Result<Response<pb::SignCertificateResponse>, Status> {
        Ok(Response::new(self.sign(req).await?))
    }

    async fn who_am_i(
        &self,
        req: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let id = identity(&req)?;
        Ok(Response::new(pb::WhoAmIResponse {
            user: id.user,
            groups: id.groups,
        }))
    }
}

impl GrpcApi {
    async fn sign(
        &self,
        req: Request<pb::SignCertificateRequest>,
    ) -> Result<pb::SignCertificateResponse, Status> {
        let id = self.caller_at(&req, "create", "/admin/certificates")?;
        let r = req.into_inner();
        let secured = self.secured.as_ref().ok_or_else(|| {
            Status::failed_precondition("this API server serves plaintext and holds no CA")
        })?;
        if r.user.is_empty() {
            return Err(Status::invalid_argument("user: Required value"));
        }
        let admin = id.groups.iter().any(|g| g == "system:masters");
        let own_groups: Vec<&String> = id
            .groups
            .iter()
            .filter(|g| *g != crate::auth::authn::AUTHENTICATED)
            .collect();
        if !admin && (r.user != id.user || r.groups.iter().any(|g| !own_groups.contains(&g))) {
            return Err(Status::permission_denied(format!(
                "user \"{}\" may renew only its own certificate (user {:?} with a subset of its groups); issuing for others takes system:masters",
                id.user, id.user
            )));
        }
        let limit = secured.settings.cert_lifetime;
        let lifetime = match r.lifetime_seconds {
            0 => limit,
            s => Duration::from_secs(s).min(limit),
        };
        let groups: Vec<&str> = r.groups.iter().map(String::as_str).collect();
        let now = SystemTime::now();
        let (certificate, private_key) = if r.csr.is_empty() {
            let i = secured
                .ca
                .issue_client(&r.user, &groups, now, lifetime)
                .map_err(|e| Status::internal(e.to_string()))?;
            (i.cert_pem, i.key_pem)
        } else {
            let c = secured
                .ca
                .sign_request(&r.csr, &r.user, &groups, now, lifetime)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            (c, String::new())
        };
        tracing::info!(by = %id.user, user = %r.user, groups = ?r.groups, ?lifetime, "signed a client certificate");
        Ok(pb::SignCertificateResponse {
            certificate,
            private_key,
            certificate_authority: secured.ca.cert_pem().to_string(),
        })
    }
}

fn not_replicated() -> Status {
    Status::failed_precondition(
        "this API server is a single master, not a member of a replicated cluster",
    )
}
