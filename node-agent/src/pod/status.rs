//! The pod's status, computed from the spec and what the runtime and probes observed, as
//! kubelet's status manager writes it: phase, conditions, container statuses, IPs, QoS class.
//!
//! Pure: the worker gathers a [`PodView`], [`compute`] renders the status JSON, and the worker
//! writes it only when it differs from what is stored ([`merge_diff`]). Condition
//! `lastTransitionTime`s carry over from the stored status while a condition keeps its value.
//! Conditions the agent does not own (PodScheduled, readiness gates' own types) are kept.

use std::net::Ipv4Addr;

use rudder_api::k8s_openapi::api::core::v1::Pod;
use serde_json::{Map, Value, json};

use crate::runtime::{ContainerInfo, State};

/// Kubernetes' pod phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// One container as the status shows it.
#[derive(Debug, Clone, Default)]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    /// The newest instance in the runtime.
    pub current: Option<ContainerInfo>,
    /// The one before it (for `lastState`).
    pub previous: Option<ContainerInfo>,
    pub restart_count: u32,
    /// Why it is not running, when it is not: (reason, message).
    pub waiting: Option<(String, String)>,
    pub ready: bool,
    pub started: bool,
    /// What the container wrote to its terminationMessagePath (current, previous instance).
    pub message: Option<String>,
    pub previous_message: Option<String>,
}

/// Everything [`compute`] needs.
#[derive(Debug, Clone)]
pub struct PodView<'a> {
    pub pod: &'a Pod,
    pub phase: Phase,
    /// For a pod the node rejected or failed as a whole: (reason, message).
    pub reason: Option<(String, String)>,
    pub sandbox_ready: bool,
    pub pod_ip: Option<Ipv4Addr>,
    pub host_ip: &'a str,
    pub start_time: Option<jiff::Timestamp>,
    pub initialized: bool,
    pub init: Vec<ContainerView>,
    pub containers: Vec<ContainerView>,
    pub now: jiff::Timestamp,
}

/// Kubernetes' timestamps: RFC 3339 in seconds, UTC.
pub fn time(t: jiff::Timestamp) -> String {
    jiff::Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string()
}

fn container_id(id: &str) -> String {
    format!("docker://{id}")
}

/// The `state` object of one instance.
fn instance_state(c: &ContainerInfo, message: Option<&String>) -> Value {
    match c.state {
        State::Running => json!({"running": {"startedAt": c.started_at.map(time)}}),
        State::Created => json!({"waiting": {"reason": "ContainerCreating"}}),
        State::Exited => {
            let code = c.exit_code.unwrap_or(0);
            let reason = if c.oom_killed {
                "OOMKilled"
            } else if !c.error.is_empty() {
                "ContainerCannotRun"
            } else if code == 0 {
                "Completed"
            } else {
                "Error"
            };
            let mut t = Map::new();
            t.insert("exitCode".into(), json!(code));
            t.insert("reason".into(), json!(reason));
            let msg = message
                .filter(|m| !m.is_empty())
                .cloned()
                .or_else(|| (!c.error.is_empty()).then(|| c.error.clone()));
            if let Some(m) = msg {
                t.insert("message".into(), json!(m));
            }
            if let Some(s) = c.started_at {
                t.insert("startedAt".into(), json!(time(s)));
            }
            if let Some(f) = c.finished_at {
                t.insert("finishedAt".into(), json!(time(f)));
            }
            t.insert("containerID".into(), json!(container_id(&c.id)));
            json!({ "terminated": t })
        }
    }
}

fn container_status(v: &ContainerView) -> Value {
    let state = match (&v.current, &v.waiting) {
        // A stopped container waiting to restart shows why it waits; its exit is lastState.
        (Some(c), Some((reason, message))) if c.state == State::Exited => {
            wait_state(reason, message)
        }
        (Some(c), _) => instance_state(c, v.message.as_ref()),
        (None, Some((reason, message))) => wait_state(reason, message),
        (None, None) => json!({"waiting": {"reason": "ContainerCreating"}}),
    };
    let last = match (&v.current, &v.waiting) {
        (Some(c), Some(_)) if c.state == State::Exited => instance_state(c, v.message.as_ref()),
        _ => v
            .previous
            .as_ref()
            .map(|p| instance_state(p, v.previous_message.as_ref()))
            .unwrap_or_else(|| json!({})),
    };
    let mut s = json!({
        "name": v.name,
        "image": v.image,
        "imageID": v.current.as_ref().map(|c| c.image_id.clone()).unwrap_or_default(),
        "ready": v.ready,
        "started": v.started,
        "restartCount": v.restart_count,
        "state": state,
        "lastState": last,
    });
    if let Some(c) = &v.current {
        s["containerID"] = json!(container_id(&c.id));
    }
    s
}

fn wait_state(reason: &str, message: &str) -> Value {
    if message.is_empty() {
        json!({"waiting": {"reason": reason}})
    } else {
        json!({"waiting": {"reason": reason, "message": message}})
    }
}

const OWNED: [&str; 4] = [
    "PodReadyToStartContainers",
    "Initialized",
    "ContainersReady",
    "Ready",
];

fn condition(old: &Value, ty: &str, ok: bool, reason: Option<&str>, now: &str) -> Value {
    let status = if ok { "True" } else { "False" };
    let prev = old
        .get("conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == ty));
    let since = match prev {
        Some(p) if p["status"] == status => p["lastTransitionTime"].clone(),
        _ => json!(now),
    };
    let mut c =
        json!({"type": ty, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
    if let Some(r) = reason.filter(|_| !ok) {
        c["reason"] = json!(r);
    }
    c
}

/// The status to store, given the stored one (`old`) for transition times and foreign
/// conditions.
pub fn compute(v: &PodView<'_>, old: &Value) -> Value {
    let now = time(v.now);
    let init: Vec<Value> = v.init.iter().map(container_status).collect();
    let containers: Vec<Value> = v.containers.iter().map(container_status).collect();
    let all_ready = !v.containers.is_empty()
        && v.containers.iter().all(|c| c.ready)
        && v.phase == Phase::Running;
    let terminal_done = v.phase == Phase::Succeeded;
    let mut conditions: Vec<Value> = old
        .get("conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| !OWNED.contains(&c["type"].as_str().unwrap_or("")))
        .cloned()
        .collect();
    let not_ready_reason = if terminal_done {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    conditions.push(condition(
        old,
        "PodReadyToStartContainers",
        v.sandbox_ready,
        None,
        &now,
    ));
    conditions.push(condition(
        old,
        "Initialized",
        v.initialized || terminal_done,
        Some("ContainersNotInitialized"),
        &now,
    ));
    conditions.push(condition(
        old,
        "ContainersReady",
        all_ready,
        Some(not_ready_reason),
        &now,
    ));
    conditions.push(condition(
        old,
        "Ready",
        all_ready,
        Some(not_ready_reason),
        &now,
    ));
    let mut s = Map::new();
    s.insert("phase".into(), json!(v.phase.as_str()));
    s.insert("conditions".into(), Value::Array(conditions));
    if let Some((reason, message)) = &v.reason {
        s.insert("reason".into(), json!(reason));
        s.insert("message".into(), json!(message));
    }
    if !v.host_ip.is_empty() {
        s.insert("hostIP".into(), json!(v.host_ip));
        s.insert("hostIPs".into(), json!([{"ip": v.host_ip}]));
    }
    if let Some(ip) = v.pod_ip {
        s.insert("podIP".into(), json!(ip.to_string()));
        s.insert("podIPs".into(), json!([{"ip": ip.to_string()}]));
    }
    if let Some(t) = v.start_time {
        s.insert("startTime".into(), json!(time(t)));
    }
    if !init.is_empty() {
        s.insert("initContainerStatuses".into(), Value::Array(init));
    }
    s.insert("containerStatuses".into(), Value::Array(containers));
    s.insert(
        "qosClass".into(),
        json!(rudder_api::resources::qos_class(v.pod)),
    );
    Value::Object(s)
}

/// The RFC 7386 merge patch that turns `old` into `new` (`None` when they are equal): fields
/// gone from `new` become `null`, lists are replaced whole.
pub fn merge_diff(old: &Value, new: &Value) -> Option<Value> {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut patch = Map::new();
            for (k, nv) in n {
                match o.get(k) {
                    Some(ov) => {
                        if let Some(d) = merge_diff(ov, nv) {
                            patch.insert(k.clone(), d);
                        }
                    }
                    None => {
                        patch.insert(k.clone(), nv.clone());
                    }
                }
            }
            for k in o.keys() {
                if !n.contains_key(k) {
                    patch.insert(k.clone(), Value::Null);
                }
            }
            (!patch.is_empty()).then_some(Value::Object(patch))
        }
        _ if old == new => None,
        _ => Some(new.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Owner, Role};

    fn info(state: State, exit: Option<i64>) -> ContainerInfo {
        let t = jiff::Timestamp::from_second(1_800_000_000).expect("time");
        ContainerInfo {
            id: "abc".into(),
            role: Role::Container,
            owner: Owner::default(),
            name: "web".into(),
            attempt: 0,
            image: "img".into(),
            image_id: "sha256:1".into(),
            state,
            exit_code: exit,
            oom_killed: false,
            error: String::new(),
            created_at: Some(t),
            started_at: Some(t),
            finished_at: (state == State::Exited).then_some(t),
            ip: None,
        }
    }

    fn pod() -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "web", "image": "img"}]}}))
            .expect("pod")
    }

    fn view(p: &Pod, c: ContainerView, phase: Phase) -> PodView<'_> {
        PodView {
            pod: p,
            phase,
            reason: None,
            sandbox_ready: true,
            pod_ip: Some(Ipv4Addr::new(10, 88, 1, 2)),
            host_ip: "192.0.2.2",
            start_time: Some(jiff::Timestamp::from_second(1_800_000_000).expect("t")),
            initialized: true,
            init: vec![],
            containers: vec![c],
            now: jiff::Timestamp::from_second(1_800_000_100).expect("t"),
        }
    }

    #[test]
    fn crash_loop_shows_waiting_with_the_exit_as_last_state() {
        let p = pod();
        let c = ContainerView {
            name: "web".into(),
            image: "img".into(),
            current: Some(info(State::Exited, Some(2))),
            restart_count: 3,
            waiting: Some((
                "CrashLoopBackOff".into(),
                "back-off 40s restarting failed container=web pod=p".into(),
            )),
            ..ContainerView::default()
        };
        let s = compute(&view(&p, c, Phase::Running), &json!({}));
        let cs = &s["containerStatuses"][0];
        assert_eq!(cs["state"]["waiting"]["reason"], "CrashLoopBackOff");
        assert_eq!(cs["lastState"]["terminated"]["exitCode"], 2);
        assert_eq!(cs["lastState"]["terminated"]["reason"], "Error");
        assert_eq!(cs["restartCount"], 3);
        assert_eq!(s["qosClass"], "BestEffort");
        assert_eq!(s["podIP"], "10.88.1.2");
    }

    #[test]
    fn ready_conditions_and_transition_times_carry_over() {
        let p = pod();
        let c = ContainerView {
            name: "web".into(),
            image: "img".into(),
            current: Some(info(State::Running, None)),
            ready: true,
            started: true,
            ..ContainerView::default()
        };
        let v = view(&p, c, Phase::Running);
        let old = json!({"conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2027-01-01T00:00:00Z"},
            {"type": "Ready", "status": "True", "lastTransitionTime": "2027-01-01T00:00:01Z"},
            {"type": "Initialized", "status": "False", "lastTransitionTime": "2027-01-01T00:00:02Z"},
        ]});
        let s = compute(&v, &old);
        let conds = s["conditions"].as_array().expect("conditions");
        let get = |t: &str| conds.iter().find(|c| c["type"] == t).cloned().expect(t);
        assert_eq!(
            get("PodScheduled")["status"],
            "True",
            "foreign conditions kept"
        );
        assert_eq!(get("Ready")["lastTransitionTime"], "2027-01-01T00:00:01Z");
        assert_eq!(get("Initialized")["status"], "True");
        assert_eq!(get("Initialized")["lastTransitionTime"], time(v.now));
        assert_eq!(get("ContainersReady")["status"], "True");
    }

    #[test]
    fn merge_diff_nulls_removed_fields_and_skips_equal() {
        let old = json!({"a": 1, "s": {"waiting": {"reason": "X"}}, "l": [1]});
        let new = json!({"a": 1, "s": {"running": {}}, "l": [1, 2]});
        assert_eq!(
            merge_diff(&old, &new),
            Some(json!({"s": {"running": {}, "waiting": null}, "l": [1, 2]}))
        );
        assert_eq!(merge_diff(&new, &new), None);
    }
}
