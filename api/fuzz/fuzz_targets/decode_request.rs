//! Any byte string as what a client sends skiffd: its first line is a query string and an
//! `X-Registry-Auth` / `X-Registry-Config` header, the rest a `POST /containers/create` body.
//! Decoding must end in a value or an error (a 400), never panic; credentials that decode must
//! survive being encoded (as the skiff CLI sends them) and decoded again.

#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff_api::daemon::create::{decode_create, parse_size};
use skiff_api::daemon::query::Query;
use skiff_api::daemon::registry_auth::RegistryAuth;

fuzz_target!(|data: &[u8]| {
    let (line, body) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&data[..0], data),
    };
    let line = String::from_utf8_lossy(line);

    let query = Query::parse(Some(&line));
    let _ = query.bool("force");
    let _ = query.bool_or("stream", true);
    let _ = query.number::<i64>("t");
    let _ = query.number::<u16>("h");
    let _ = query.all("names");
    let _ = query.string("platform");
    let _ = query.filters();

    let _ = decode_create(query.get("name"), body);
    let _ = decode_create(None, body);

    if let Ok(Some(auth)) = RegistryAuth::decode(&line) {
        let again = RegistryAuth::decode(&auth.encode()).expect("encoded credentials decode");
        assert!(again == Some(auth), "credentials changed on a round trip");
    }
    let _ = RegistryAuth::decode_config(&line);
    let _ = parse_size(&line);
});
