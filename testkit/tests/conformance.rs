//! The conformance suite against every backend: each case is one test per backend.
//!
//! The in-process API server is the reference (it follows Kubernetes); the fake must agree.

use rudder_testkit::TestServer;
use rudder_testkit::conformance::{self, Target};

/// Watch history of both backends, small so that the expiry case stays quick.
const HISTORY: usize = 32;

mod server {
    use super::*;

    async fn target() -> (TestServer, Target) {
        let s = TestServer::builder()
            .history_window(HISTORY)
            .start()
            .await
            .unwrap_or_else(|e| panic!("test server: {e}"));
        let t = Target {
            api: s.api(),
            history_window: HISTORY,
        };
        (s, t)
    }

    macro_rules! case {
        ($case:ident) => {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (server, t) = target().await;
                conformance::$case(t).await;
                server.shutdown().await;
            }
        };
    }

    rudder_testkit::for_each_case!(case);
}

mod fake {
    use rudder_client::fake::FakeApi;

    use super::*;

    fn target() -> Target {
        let fake = FakeApi::builder()
            .history(HISTORY)
            .require_namespaces()
            .build();
        Target {
            api: fake,
            history_window: HISTORY,
        }
    }

    macro_rules! case {
        ($case:ident) => {
            #[tokio::test(start_paused = true)]
            async fn $case() {
                conformance::$case(target()).await;
            }
        };
    }

    rudder_testkit::for_each_case!(case);
}
