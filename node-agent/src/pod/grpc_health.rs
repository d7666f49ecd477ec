//! The gRPC health-checking protocol's `Check` call (`grpc.health.v1.Health/Check`), for grpc
//! probes: the two messages are declared by hand rather than generated, as they are all a probe
//! needs.

use tonic::codegen::http::uri::PathAndQuery;

#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    /// 1 is SERVING.
    #[prost(int32, tag = "1")]
    status: i32,
}

const SERVING: i32 = 1;

/// Whether the server at `host:port` reports `service` (empty: the whole server) as serving.
pub async fn check(host: &str, port: u16, service: &str) -> Result<bool, String> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{host}:{port}"))
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("failed to connect service {host}:{port}: {e}"))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| e.to_string())?;
    let req = tonic::Request::new(HealthCheckRequest {
        service: service.to_string(),
    });
    let resp: tonic::Response<HealthCheckResponse> = grpc
        .unary(
            req,
            PathAndQuery::from_static("/grpc.health.v1.Health/Check"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .map_err(|s| format!("rpc error: code = {:?} desc = {}", s.code(), s.message()))?;
    Ok(resp.into_inner().status == SERVING)
}
