//! The Job controller: paused-time tests on the client's fake (`job/fake.rs`) and tests on the
//! in-process cluster (real API server, scheduler and simulated nodes).

#[path = "job/fake.rs"]
mod fake;
