//! The soak's short version for CI (`cargo xtask soak --minutes N` runs it
//! longer): one round of every fault (a real server stops and returns, the
//! master balancer is killed and returns, its link goes down and up, its
//! config is reloaded) under a steady client load. No request may fail
//! outside the windows keepalived's timings allow; the report is printed.

use std::time::Duration;

#[test]
fn one_round_of_every_fault_under_load() {
    let report =
        lb_testbed::soak::run(&format!("lbs{}", std::process::id()), Duration::ZERO).unwrap();
    eprint!("{}", report.render());
    assert!(report.requests > 0);
    assert!(
        report.unexplained.is_empty(),
        "requests failed outside every fault window at {:?}\n{}",
        report.unexplained,
        report.render()
    );
    for (fault, stats) in &report.per_fault {
        assert_eq!(stats.injected, 1, "{}", fault.name());
    }
}
