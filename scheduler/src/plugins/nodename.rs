//! NodeName: a pod that names its node fits only there.

use crate::framework::{FilterPlugin, NodeInfo, PodInfo, Status};

pub const REASON: &str = "node(s) didn't match the requested node name";

pub struct NodeName;

impl FilterPlugin for NodeName {
    fn name(&self) -> &'static str {
        "NodeName"
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Status {
        match pod.pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            Some(n) if !n.is_empty() && n != node.name => Status::unresolvable(REASON),
            _ => Status::success(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::plugins::testutil::*;
    use serde_json::json;

    #[test]
    fn only_the_named_node_fits() {
        let p = pod(json!({"nodeName": "a", "containers": []}));
        assert!(NodeName.filter(&p, &info(node("a", "1"))).is_success());
        let s = NodeName.filter(&p, &info(node("b", "1")));
        assert_eq!(s.code, Code::UnschedulableAndUnresolvable);
        assert_eq!(s.reasons, vec![REASON.to_string()]);
        assert!(
            NodeName
                .filter(&pod_cpu("1"), &info(node("b", "1")))
                .is_success()
        );
    }
}
