//! NodePorts: a pod's host ports must be free on the node (same protocol and port with
//! overlapping host addresses conflict), counting bound and assumed pods.

use crate::framework::{FilterPlugin, NodeInfo, PodInfo, Status};

pub const REASON: &str = "node(s) didn't have free ports for the requested pod ports";

pub struct NodePorts;

impl FilterPlugin for NodePorts {
    fn name(&self) -> &'static str {
        "NodePorts"
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Status {
        let clash = pod
            .host_ports
            .iter()
            .any(|want| node.used_ports.iter().any(|used| want.conflicts(used)));
        if clash {
            Status::unschedulable(REASON)
        } else {
            Status::success()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::*;
    use serde_json::json;

    fn with_port(ip: &str, proto: &str, port: i32) -> PodInfo {
        pod(json!({"containers": [{"name": "c", "ports": [
            {"containerPort": 80, "hostPort": port, "hostIP": ip, "protocol": proto}]}]}))
    }

    #[test]
    fn host_ports_conflict_by_protocol_port_and_overlapping_address() {
        let mut n = info(node("a", "1"));
        n.add_pod(&with_port("", "TCP", 8080));
        assert_eq!(
            NodePorts
                .filter(&with_port("10.0.0.1", "TCP", 8080), &n)
                .reasons,
            vec![REASON]
        );
        assert!(
            NodePorts
                .filter(&with_port("", "UDP", 8080), &n)
                .is_success()
        );
        assert!(
            NodePorts
                .filter(&with_port("", "TCP", 8081), &n)
                .is_success()
        );
        let mut n = info(node("a", "1"));
        n.add_pod(&with_port("10.0.0.1", "TCP", 8080));
        assert!(
            NodePorts
                .filter(&with_port("10.0.0.2", "TCP", 8080), &n)
                .is_success()
        );
        assert!(
            !NodePorts
                .filter(&with_port("0.0.0.0", "TCP", 8080), &n)
                .is_success()
        );
        // A pod without host ports never conflicts; a sidecar's host port counts.
        assert!(NodePorts.filter(&pod_cpu("1"), &n).is_success());
        let sidecar = pod(json!({"containers": [], "initContainers": [{"name": "s",
            "restartPolicy": "Always", "ports": [{"containerPort": 1, "hostPort": 8080, "hostIP": "10.0.0.1"}]}]}));
        assert!(!NodePorts.filter(&sidecar, &n).is_success());
    }
}
