use super::*;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, UNIX_EPOCH};

/// 2026-11-25T16:12:02.123456789Z
fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::new(1_795_623_122, 123_456_789)
}

const TIME: &str = "2026-11-25T16:12:02.123456789Z";

fn unlimited() -> LogLimits {
    LogLimits {
        max_bytes: 0,
        max_files: 1,
    }
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn rec(log: &str, stream: &str) -> String {
    format!("{{\"log\":\"{log}\",\"stream\":\"{stream}\",\"time\":\"{TIME}\"}}")
}

#[test]
fn record_is_dockers_json_file_line_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c-json.log");
    let mut w = LogWriter::open(&path, unlimited()).unwrap();
    w.write(Stream::Stderr, b"hi\n", t0()).unwrap();
    // What dockerd's json-file driver writes for `echo hi >&2` (with the 9-digit time).
    let docker =
        "{\"log\":\"hi\\n\",\"stream\":\"stderr\",\"time\":\"2026-11-25T16:12:02.123456789Z\"}\n";
    assert_eq!(fs::read_to_string(&path).unwrap(), docker);
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & !0o640, 0, "mode {mode:o}");
}

#[test]
fn escapes_as_go_does() {
    let mut out = Vec::new();
    let log = "<a href=\"x\">&\t\\\r\u{1}\u{7f}é\u{2028}\u{2029}\u{fffd}\n".as_bytes();
    encode_record(&mut out, Stream::Stdout, log, t0());
    let go = r#"{"log":"\u003ca href=\"x\"\u003e\u0026\u0009\\\r\u0001"#.to_owned()
        + "\u{7f}é\\u2028\\u2029\u{fffd}\\n\",\"stream\":\"stdout\",\"time\":\""
        + TIME
        + "\"}\n";
    assert_eq!(String::from_utf8(out.clone()).unwrap(), go);
    // And any JSON parser reads the original text back.
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["log"].as_str().unwrap().as_bytes(), log);
}

#[test]
fn invalid_utf8_becomes_one_replacement_per_byte() {
    let mut out = Vec::new();
    // A lone continuation byte, a truncated 3-byte sequence, a surrogate, and 0xff.
    encode_record(
        &mut out,
        Stream::Stdout,
        b"a\x80b\xe2\x82c\xed\xa0\x80\xff\n",
        t0(),
    );
    let text = String::from_utf8(out).unwrap();
    let want = r#""log":"a\ufffdb\ufffd\ufffdc\ufffd\ufffd\ufffd\ufffd\n""#;
    assert!(text.starts_with(&format!("{{{want}")), "{text}");
}

#[test]
fn lines_split_and_partials_buffered_per_stream() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let mut w = LogWriter::open(&path, unlimited()).unwrap();
    w.write(Stream::Stdout, b"one\ntw", t0()).unwrap();
    w.write(Stream::Stderr, b"err", t0()).unwrap();
    w.write(Stream::Stdout, b"o\n\nthr", t0()).unwrap();
    w.write(Stream::Stderr, b"!\n", t0()).unwrap();
    assert_eq!(
        lines(&path),
        [
            rec("one\\n", "stdout"),
            rec("two\\n", "stdout"),
            rec("\\n", "stdout"),
            rec("err!\\n", "stderr")
        ]
    );
    w.flush_partial(t0()).unwrap();
    w.flush_partial(t0()).unwrap(); // nothing left the second time
    assert_eq!(lines(&path).len(), 5);
    assert_eq!(lines(&path)[4], rec("thr", "stdout"));
}

#[test]
fn long_line_is_written_in_16k_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let mut w = LogWriter::open(&path, unlimited()).unwrap();
    // 40000 bytes and a newline, fed in uneven slices.
    let line: Vec<u8> = (0..40_000)
        .map(|i| b'a' + (i % 26) as u8)
        .chain([b'\n'])
        .collect();
    for part in line.chunks(7001) {
        w.write(Stream::Stdout, part, t0()).unwrap();
        assert!(w.partial[0].len() < MAX_LINE);
    }
    let got = lines(&path);
    let logs: Vec<String> = got
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["log"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        logs.iter().map(String::len).collect::<Vec<_>>(),
        [16384, 16384, 40000 - 32768 + 1]
    );
    assert!(!logs[0].ends_with('\n') && !logs[1].ends_with('\n') && logs[2].ends_with('\n'));
    assert_eq!(logs.concat().as_bytes(), line);

    // Exactly MAX_LINE bytes of content: a full piece, then the newline alone (as Docker).
    let mut exact = vec![b'x'; MAX_LINE];
    exact.push(b'\n');
    w.write(Stream::Stderr, &exact, t0()).unwrap();
    assert_eq!(lines(&path).last().unwrap(), &rec("\\n", "stderr"));
}

#[test]
fn pieces_do_not_split_a_character() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let mut w = LogWriter::open(&path, unlimited()).unwrap();
    // Two ASCII bytes, then 3-byte characters: byte 16384 falls inside one.
    let mut line = b"xy".to_vec();
    line.extend("€".repeat(6000).as_bytes());
    w.write(Stream::Stdout, &line, t0()).unwrap();
    w.flush_partial(t0()).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    assert!(!text.contains("\\ufffd"));
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["log"].as_str().unwrap().len(), 16384 - 2);
}

#[test]
fn rotation_keeps_max_files_and_drops_the_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let one = rec("0\\n", "stdout").len() as u64 + 1;
    // Room for exactly two records per file.
    let limits = LogLimits {
        max_bytes: 2 * one,
        max_files: 3,
    };
    let mut w = LogWriter::open(&path, limits).unwrap();
    for i in 0..9 {
        w.write(Stream::Stdout, format!("{i}\n").as_bytes(), t0())
            .unwrap();
    }
    let content = |p: &Path| lines(p).join("|");
    let pair = |a: u32, b: u32| {
        format!(
            "{}|{}",
            rec(&format!("{a}\\n"), "stdout"),
            rec(&format!("{b}\\n"), "stdout")
        )
    };
    assert_eq!(content(&path), rec("8\\n", "stdout"));
    assert_eq!(content(&rotated_path(&path, 1)), pair(6, 7));
    assert_eq!(content(&rotated_path(&path, 2)), pair(4, 5));
    assert!(!rotated_path(&path, 3).exists());
    let mut names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["log", "log.1", "log.2"]);
}

#[test]
fn reopening_appends_and_counts_the_existing_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let one = rec("0\\n", "stdout").len() as u64 + 1;
    let limits = LogLimits {
        max_bytes: 2 * one,
        max_files: 2,
    };
    LogWriter::open(&path, limits)
        .unwrap()
        .write(Stream::Stdout, b"0\n1\n", t0())
        .unwrap();
    let mut w = LogWriter::open(&path, limits).unwrap();
    w.write(Stream::Stdout, b"2\n", t0()).unwrap();
    assert_eq!(lines(&rotated_path(&path, 1)).len(), 2);
    assert_eq!(lines(&path), [rec("2\\n", "stdout")]);
}

#[test]
fn one_file_truncates_and_stale_rotations_go() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    // Left over from a run with a larger max_files.
    fs::write(rotated_path(&path, 1), "old\n").unwrap();
    fs::write(rotated_path(&path, 2), "older\n").unwrap();
    let one = rec("0\\n", "stdout").len() as u64 + 1;
    let mut w = LogWriter::open(
        &path,
        LogLimits {
            max_bytes: 2 * one,
            max_files: 1,
        },
    )
    .unwrap();
    w.write(Stream::Stdout, b"0\n1\n2\n", t0()).unwrap();
    assert_eq!(lines(&path), [rec("2\\n", "stdout")]);
    assert!(!rotated_path(&path, 1).exists() && !rotated_path(&path, 2).exists());
}

#[test]
fn oversized_record_goes_alone_into_a_fresh_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let mut w = LogWriter::open(
        &path,
        LogLimits {
            max_bytes: 100,
            max_files: 3,
        },
    )
    .unwrap();
    w.write(Stream::Stdout, b"a\n", t0()).unwrap();
    let big = format!("{}\n", "b".repeat(300));
    w.write(Stream::Stdout, big.as_bytes(), t0()).unwrap();
    w.write(Stream::Stdout, b"c\n", t0()).unwrap();
    assert_eq!(lines(&rotated_path(&path, 2)), [rec("a\\n", "stdout")]);
    assert_eq!(lines(&rotated_path(&path, 1)).len(), 1);
    assert!(lines(&rotated_path(&path, 1))[0].len() > 300);
    assert_eq!(lines(&path), [rec("c\\n", "stdout")]);
}

#[test]
fn limits_serde() {
    let l: LogLimits = serde_json::from_str(r#"{"max_bytes":10,"max_files":2}"#).unwrap();
    assert_eq!(
        l,
        LogLimits {
            max_bytes: 10,
            max_files: 2
        }
    );
    assert!(serde_json::from_str::<LogLimits>(r#"{"max_bytes":10,"max_files":2,"x":1}"#).is_err());
    assert_eq!(
        LogLimits::default(),
        LogLimits {
            max_bytes: 20 << 20,
            max_files: 5
        }
    );
    assert_eq!(
        serde_json::to_string(&Stream::Stderr).unwrap(),
        "\"stderr\""
    );
}

#[test]
fn a_symlink_or_fifo_in_place_of_the_log_is_neither_followed_nor_opened() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("elsewhere");
    fs::write(&target, b"kept\n").unwrap();
    let log = dir.path().join("c.log");
    std::os::unix::fs::symlink(&target, &log).unwrap();
    assert!(LogWriter::open(&log, unlimited()).is_err());
    assert!(crate::reader::read_all(&log).is_err());
    assert_eq!(fs::read(&target).unwrap(), b"kept\n");
    let fifo = dir.path().join("f.log");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // Neither blocks on the FIFO (a reader with no writer would wait forever).
    assert!(LogWriter::open(&fifo, unlimited()).is_err());
    assert!(crate::reader::read_all(&fifo).is_err());
}
