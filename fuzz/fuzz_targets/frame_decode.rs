//! Arbitrary text through both frame decoders: an `Ok` frame or a coded `DecodeError`, never a
//! panic; a decoded frame encodes and decodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::{Frame as _, Inbound, Outbound};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match Inbound::decode(&text) {
        Ok(frame) => {
            let again = Inbound::decode(&frame.encode()).expect("an encoded frame decodes");
            assert_eq!(again, frame);
        }
        Err(e) => assert!(!e.code.as_str().is_empty()),
    }
    match Outbound::decode(&text) {
        Ok(frame) => {
            let again = Outbound::decode(&frame.encode()).expect("an encoded frame decodes");
            assert_eq!(again, frame);
        }
        Err(e) => assert!(!e.code.as_str().is_empty()),
    }
});
