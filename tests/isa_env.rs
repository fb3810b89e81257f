//! `SMYRF_ISA` handling. Its own test binary: it changes the process environment.

use smyrf::{Config, Error, Isa, Plan};

#[test]
fn environment_override_is_honoured_and_checked() {
    let saved = std::env::var("SMYRF_ISA").ok();
    std::env::set_var("SMYRF_ISA", "no-such-tier");
    assert_eq!(
        Plan::new(Config::default(), 8).unwrap_err(),
        Error::UnknownIsa {
            name: "no-such-tier".into()
        }
    );
    std::env::set_var("SMYRF_ISA", " Portable ");
    assert_eq!(
        Plan::new(Config::default(), 8).unwrap().isa(),
        Isa::Portable
    );
    // An explicit request in the config wins over the environment.
    let explicit = smyrf::detected_isa();
    assert_eq!(
        Plan::new(Config::default().isa(explicit), 8).unwrap().isa(),
        explicit
    );
    match saved {
        Some(v) => std::env::set_var("SMYRF_ISA", v),
        None => std::env::remove_var("SMYRF_ISA"),
    }
}
