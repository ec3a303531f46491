use super::*;
use crate::writer::{encode_record, LogLimits, LogWriter};
use std::fs::OpenOptions;
use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

fn at(i: u64) -> SystemTime {
    UNIX_EPOCH + Duration::new(1_795_623_122 + i, 7)
}

fn encoded(i: u64) -> Vec<u8> {
    let mut out = Vec::new();
    encode_record(
        &mut out,
        Stream::Stdout,
        format!("line {i}\n").as_bytes(),
        at(i),
    );
    out
}

fn logs(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8(r.log.clone()).unwrap())
        .collect()
}

fn numbered(range: std::ops::Range<u64>) -> Vec<String> {
    range.map(|i| format!("line {i}\n")).collect()
}

/// Room for `n` records of `encoded` per file (they are all the same length below 10).
fn limits(n: u64, max_files: u32) -> LogLimits {
    LogLimits {
        max_bytes: n * encoded(0).len() as u64,
        max_files,
    }
}

fn write_range(w: &mut LogWriter, range: std::ops::Range<u64>) {
    for i in range {
        w.write(Stream::Stdout, format!("line {i}\n").as_bytes(), at(i))
            .unwrap();
    }
}

fn append(path: &Path, bytes: &[u8]) {
    OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

#[test]
fn record_fields_and_within() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let mut w = LogWriter::open(&path, limits(100, 1)).unwrap();
    w.write(Stream::Stderr, b"a\n", at(1)).unwrap();
    w.write(Stream::Stdout, b"b", at(2)).unwrap();
    w.flush_partial(at(2)).unwrap();
    let all = read_all(&path).unwrap();
    assert_eq!(all[0].stream, Stream::Stderr);
    assert_eq!(all[0].time, at(1));
    assert_eq!(all[0].time_text, "2026-11-25T16:12:03.000000007Z");
    assert_eq!(logs(&all), ["a\n", "b"]);
    assert!(within(&all[0], Some(at(1)), Some(at(1))));
    assert!(within(&all[0], None, None));
    assert!(!within(&all[0], Some(at(2)), None));
    assert!(!within(&all[1], None, Some(at(1))));
}

#[test]
fn read_all_spans_rotated_files_and_skips_junk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let mut w = LogWriter::open(&path, limits(2, 3)).unwrap();
    write_range(&mut w, 0..9);
    assert_eq!(
        files_oldest_first(&path),
        [rotated_path(&path, 2), rotated_path(&path, 1), path.clone()]
    );
    assert_eq!(logs(&read_all(&path).unwrap()), numbered(4..9));
    // Garbage, a record of another shape, and a torn last line: all skipped.
    append(&path, b"garbage\n{\"log\":\"x\"}\n\n");
    let torn = encoded(9);
    append(&path, &torn[..torn.len() / 2]);
    assert_eq!(logs(&read_all(&path).unwrap()), numbered(4..9));
    assert!(read_all(&dir.path().join("none")).unwrap().is_empty());
}

#[test]
fn docker_written_lines_parse() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    // Docker trims the time's trailing zeros and omits an empty `log`.
    append(
        &path,
        b"{\"log\":\"\\u003cok\\u003e\\n\",\"stream\":\"stdout\",\"time\":\"2026-11-25T16:12:02.1Z\"}\n\
          {\"stream\":\"stderr\",\"attrs\":{\"k\":\"v\"},\"time\":\"2026-11-25T16:12:02Z\"}\n",
    );
    let all = read_all(&path).unwrap();
    assert_eq!(logs(&all), ["<ok>\n", ""]);
    assert_eq!(
        all[0].time,
        UNIX_EPOCH + Duration::new(1_795_623_122, 100_000_000)
    );
    assert_eq!(all[0].time_text, "2026-11-25T16:12:02.1Z");
}

#[test]
fn tail_crosses_file_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let mut w = LogWriter::open(&path, limits(2, 3)).unwrap();
    write_range(&mut w, 0..9);
    assert_eq!(logs(&tail(&path, 3).unwrap()), numbered(6..9));
    assert_eq!(logs(&tail(&path, 4).unwrap()), numbered(5..9));
    assert_eq!(logs(&tail(&path, 100).unwrap()), numbered(4..9));
    assert!(tail(&path, 0).unwrap().is_empty());
    // A torn last line is not a record.
    let torn = encoded(9);
    append(&path, &torn[..10]);
    assert_eq!(logs(&tail(&path, 1).unwrap()), numbered(8..9));
}

#[test]
fn tail_matches_read_all_with_lines_across_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let mut w = LogWriter::open(
        &path,
        LogLimits {
            max_bytes: 500_000,
            max_files: 4,
        },
    )
    .unwrap();
    // Lines from 0 to ~16 KiB of `<` (6 bytes each once escaped), so records up to ~96 KiB
    // that straddle the 64 KiB read chunks.
    let mut seed = 12345u64;
    for i in 0..60 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let len = (seed >> 33) as usize % 17_000;
        let line = format!("{i}{}\n", "<".repeat(len));
        w.write(Stream::Stdout, line.as_bytes(), at(i)).unwrap();
    }
    let all = read_all(&path).unwrap();
    assert_eq!(files_oldest_first(&path).len(), 4);
    assert!(all.len() > 20, "{}", all.len());
    for n in [1, 2, 5, 13, all.len(), all.len() + 5] {
        let want = &all[all.len().saturating_sub(n)..];
        assert_eq!(tail(&path, n).unwrap(), want, "tail {n}");
    }
}

#[test]
fn tail_of_a_big_file_reads_only_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let block: Vec<u8> = (0..10_000).flat_map(encoded).collect();
    let mut file = File::create(&path).unwrap();
    while file.metadata().unwrap().len() < 50_000_000 {
        file.write_all(&block).unwrap();
    }
    let last: Vec<u8> = (20_000..20_003).flat_map(encoded).collect();
    file.write_all(&last).unwrap();
    let (records, read) = tail_counted(&path, 3).unwrap();
    assert_eq!(logs(&records), numbered(20_000..20_003));
    assert!(read <= CHUNK as u64, "read {read} bytes");
}

#[test]
fn follower_sees_appends_and_completes_a_torn_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    append(&path, &encoded(0));
    let mut f = Follower::at_end(&path).unwrap();
    assert!(f.poll().unwrap().is_empty());
    let rec = encoded(1);
    let (head, rest) = rec.split_at(20);
    append(&path, head);
    assert!(f.poll().unwrap().is_empty());
    assert!(
        read_all(&path).unwrap().len() == 1,
        "read_all skips the torn line"
    );
    append(&path, rest);
    assert_eq!(logs(&f.poll().unwrap()), numbered(1..2));
    assert_eq!(read_all(&path).unwrap().len(), 2);
    assert!(f.poll().unwrap().is_empty());
}

#[test]
fn follower_across_rotations_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let mut w = LogWriter::open(&path, limits(3, 5)).unwrap();
    write_range(&mut w, 0..2);
    let mut from_now = Follower::at_end(&path).unwrap();
    let mut from_start = Follower::from_start(&path).unwrap();
    let (mut got_now, mut got_all) = (Vec::new(), Vec::new());
    let mut i = 2;
    // Between polls: nothing, part of a file, one rotation, and up to three rotations.
    for batch in [0, 1, 2, 3, 5, 7, 9, 1, 10] {
        write_range(&mut w, i..i + batch);
        i += batch;
        got_now.extend(logs(&from_now.poll().unwrap()));
        got_all.extend(logs(&from_start.poll().unwrap()));
    }
    assert_eq!(got_now, numbered(2..i));
    assert_eq!(got_all, numbered(0..i));
}

#[test]
fn follower_from_start_reads_a_rotated_log_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let mut w = LogWriter::open(&path, limits(2, 4)).unwrap();
    write_range(&mut w, 0..7);
    let mut f = Follower::from_start(&path).unwrap();
    assert_eq!(logs(&f.poll().unwrap()), numbered(0..7));
    assert!(f.poll().unwrap().is_empty());
}

#[test]
fn follower_whose_file_was_deleted_goes_on_with_the_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let mut w = LogWriter::open(&path, limits(2, 2)).unwrap();
    write_range(&mut w, 0..1);
    let mut f = Follower::at_end(&path).unwrap();
    // Three rotations: the followed file and its successor are both dropped.
    write_range(&mut w, 1..7);
    assert_eq!(
        logs(&f.poll().unwrap()),
        ["line 1\n", "line 4\n", "line 5\n", "line 6\n"]
    );
}

#[test]
fn follower_before_the_log_exists_and_after_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let mut f = Follower::at_end(&path).unwrap();
    assert!(f.poll().unwrap().is_empty());
    let mut w = LogWriter::open(&path, limits(3, 1)).unwrap();
    write_range(&mut w, 0..3);
    assert_eq!(logs(&f.poll().unwrap()), numbered(0..3));
    // One file: truncated in place, noticed because it is now shorter.
    write_range(&mut w, 3..4);
    assert_eq!(logs(&f.poll().unwrap()), numbered(3..4));
}

#[test]
fn follower_polls_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let block: Vec<u8> = (0..40_000).flat_map(encoded).collect();
    append(&path, &block);
    let mut f = Follower::from_start(&path).unwrap();
    let mut total = 0;
    let mut polls = 0;
    loop {
        let got = f.poll().unwrap();
        if got.is_empty() {
            break;
        }
        assert!(logs(&got).concat().len() < 2 * POLL_BUDGET as usize);
        total += got.len();
        polls += 1;
    }
    assert_eq!(total, 40_000);
    assert!(polls > 1);
}
