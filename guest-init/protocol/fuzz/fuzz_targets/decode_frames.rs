//! Any byte string as what guest-init sends the host: decoding must end in messages or an error,
//! never panic or buffer without bound. The first byte sets the size of the reads the bytes
//! arrive in; the incremental decoder (skiffd's, `FrameDecoder`) and the blocking one
//! (`read_message`) must agree, and what decodes must encode back to the same message.

#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff_protocol::{read_message, FrameDecoder, Message, HEADER_LEN, MAX_PAYLOAD};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);

    // As skiffd's session reader feeds it: a read at a time, only while it wants input.
    let mut decoder = FrameDecoder::new();
    let mut incremental = Vec::new();
    let mut rest = stream;
    let mut failed = false;
    loop {
        match decoder.next_message() {
            Ok(Some(m)) => {
                incremental.push(m);
                continue;
            }
            Ok(None) => {}
            Err(_) => {
                failed = true;
                break;
            }
        }
        if rest.is_empty() {
            break;
        }
        assert!(decoder.wants_input(), "a waiting frame was not taken");
        let n = chunk.min(rest.len());
        decoder.push(&rest[..n]);
        rest = &rest[n..];
    }
    if !failed {
        // Whatever is left is an incomplete frame, so finish says so unless nothing is left.
        let _ = decoder.finish();
    }

    // The blocking reader over the same bytes finds the same messages.
    let mut cursor = stream;
    let mut blocking = Vec::new();
    while let Ok(Some(m)) = read_message(&mut cursor) {
        blocking.push(m);
    }
    assert_eq!(incremental, blocking);

    for m in &incremental {
        let frame = m.encode().expect("a decoded message encodes");
        assert!(frame.len() <= HEADER_LEN + MAX_PAYLOAD);
        let again = Message::decode(frame[0], &frame[HEADER_LEN..]).expect("re-encoding decodes");
        assert_eq!(&again, m);
    }
});
