//! Without a session bus (a server, a bare X session) `Tray::start` is an error, not a panic.
//! Its own test binary: libdbus reads the bus address once per process.

#![cfg(all(unix, not(target_os = "macos")))]
#![allow(unsafe_code)] // `std::env::set_var` before any other thread reads the environment.

#[test]
fn no_session_bus_is_an_error_and_the_caller_goes_on() {
    unsafe {
        std::env::set_var("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/mini-connector-test-bus")
    };
    match tray::Tray::start(Box::new(|_| {})) {
        Err(e @ tray::TrayError::NoSessionBus(_)) => {
            assert!(e.to_string().starts_with("no tray: no D-Bus session bus ("), "{e}")
        }
        other => panic!("expected NoSessionBus, got {other:?}"),
    }
}
