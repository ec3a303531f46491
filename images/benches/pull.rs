//! `cargo bench -p skiff-images --bench pull`: skiff's pull and merged unpack against skopeo
//! copy and umoci unpack, from the same local docker-registry, for a small image (busybox) and a
//! generated ~200 MiB four-layer image, cold (empty store) and warm (blobs already there).
//! Each step runs as a child process measured with wait4: wall time, CPU (user+sys), peak RSS.
//! Prints a table; asserts nothing about speed.
//!
//! Note what differs: skiff's pull also unpacks every layer into its shared layer directory
//! (what `skiff run` needs); skopeo copy only stores blobs.

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{fixture, run, Auth, Registry};
use skiff_images::{ImageService, PullOptions};

#[derive(Clone, Copy, Default)]
struct Cost {
    wall: Duration,
    cpu: Duration,
    rss_kib: i64,
}

impl Cost {
    fn plus(self, o: Cost) -> Cost {
        Cost {
            wall: self.wall + o.wall,
            cpu: self.cpu + o.cpu,
            rss_kib: self.rss_kib.max(o.rss_kib),
        }
    }
}

/// Runs a command to completion and reads its resource use from wait4.
// The child is reaped by wait4 itself (std's wait would not give the rusage).
#[allow(clippy::zombie_processes)]
fn measure(cmd: &mut Command) -> Cost {
    let start = Instant::now();
    let child = cmd.spawn().expect("spawn");
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid value; wait4 fills it for our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    let wall = start.elapsed();
    if rc < 0 || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        panic!("{cmd:?} failed (status {status:#x})");
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Cost {
        wall,
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        rss_kib: ru.ru_maxrss,
    }
}

/// Child mode: `child pull ROOT REF` / `child unpack ROOT REF DIR`, through the library the
/// CLI uses.
fn child(args: &[String]) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let svc = ImageService::open(Path::new(&args[1])).unwrap();
    rt.block_on(async {
        match args[0].as_str() {
            "pull" => {
                svc.pull(&args[2], &PullOptions::default()).await.unwrap();
            }
            "unpack" => svc
                .unpack_rootfs(&args[2], Path::new(&args[3]))
                .await
                .unwrap(),
            other => panic!("unknown child command {other}"),
        }
    });
}

/// Pseudo-random bytes as hex text: compresses about 2:1 like typical image content.
fn fill(seed: &mut u64, len: usize) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        for i in 0..16 {
            out.push(HEX[((*seed >> (i * 4)) & 15) as usize]);
        }
    }
    out.truncate(len);
    out
}

/// ~200 MiB in four layers: each 40 files of 1.25 MiB and 500 small files.
fn build_big_image(dir: &Path, layout: &Path) {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    common::umoci(&["init", "--layout", layout.to_str().unwrap()]);
    common::umoci(&["new", "--image", &format!("{}:big", layout.display())]);
    for layer in 0..4 {
        let root = dir.join(format!("big-{layer}"));
        for f in 0..40 {
            let p = root.join(format!("data{layer}/blob{f}.bin"));
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, fill(&mut seed, 1_310_720)).unwrap();
        }
        for f in 0..500 {
            let p = root.join(format!("etc{layer}/d{}/small{f}.conf", f % 20));
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, fill(&mut seed, 512 + f * 7)).unwrap();
        }
        let tar = dir.join(format!("big-{layer}.tar"));
        common::layer_tar(&root, &tar);
        common::add_layer(layout, "big", &tar);
        fs::remove_dir_all(&root).unwrap();
        fs::remove_file(&tar).unwrap();
    }
    common::set_config(
        layout,
        "big",
        &["--architecture", "amd64", "--config.cmd", "sh"],
    );
}

struct Row {
    image: &'static str,
    state: &'static str,
    step: &'static str,
    skiff: Cost,
    peer: Cost,
}

fn median(mut v: Vec<Cost>) -> Cost {
    v.sort_by_key(|c| c.wall);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("child") {
        return child(&args[1..]);
    }
    let me = std::env::current_exe().unwrap();
    let fx = fixture();
    let work = fx.dir.join("bench");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).unwrap();
    let storage = common::copy_storage(fx, &work);
    let reg = Registry::start(&storage, Auth::None);
    eprintln!("building the ~200 MiB image...");
    let big_layout = work.join("big-oci");
    build_big_image(&work, &big_layout);
    run(
        "skopeo",
        &[
            "--insecure-policy",
            "copy",
            "-q",
            "--dest-tls-verify=false",
            &format!("oci:{}:big", big_layout.display()),
            &format!("docker://{}/big:test", reg.addr),
        ],
    );
    let runs: usize = std::env::var("SKIFF_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);

    let mut rows = Vec::new();
    let mut n = 0;
    for (image, repo, runs) in [
        ("busybox (1 MiB)", "busybox:test", runs),
        ("generated (200 MiB, 4 layers)", "big:test", runs.min(2)),
    ] {
        let reference = format!("{}/{repo}", reg.addr);
        let mut results: Vec<[Cost; 8]> = Vec::new();
        for _ in 0..runs {
            n += 1;
            let d = work.join(format!("run{n}"));
            fs::create_dir_all(&d).unwrap();
            let root = d.join("skiff");
            let layout = d.join("oci");
            let mut c = [Cost::default(); 8];
            for (i, state) in ["cold", "warm"].iter().enumerate() {
                let out = d.join(format!("rootfs-{state}"));
                c[i * 4] = measure(
                    Command::new(&me)
                        .args(["child", "pull"])
                        .arg(&root)
                        .arg(&reference),
                );
                c[i * 4 + 1] = measure(
                    Command::new(&me)
                        .args(["child", "unpack"])
                        .arg(&root)
                        .arg(&reference)
                        .arg(&out),
                );
                c[i * 4 + 2] = measure(Command::new("skopeo").args([
                    "--insecure-policy",
                    "copy",
                    "-q",
                    "--src-tls-verify=false",
                    &format!("docker://{reference}"),
                    &format!("oci:{}:img", layout.display()),
                ]));
                c[i * 4 + 3] = measure(Command::new("umoci").args([
                    "unpack",
                    "--image",
                    &format!("{}:img", layout.display()),
                    d.join(format!("bundle-{state}")).to_str().unwrap(),
                ]));
            }
            results.push(c);
            let _ = fs::remove_dir_all(&d);
        }
        for (i, state) in ["cold", "warm"].into_iter().enumerate() {
            let pick = |k: usize| median(results.iter().map(|c| c[i * 4 + k]).collect());
            let (sp, su, pp, pu) = (pick(0), pick(1), pick(2), pick(3));
            rows.push(Row {
                image,
                state,
                step: "pull / copy",
                skiff: sp,
                peer: pp,
            });
            rows.push(Row {
                image,
                state,
                step: "unpack",
                skiff: su,
                peer: pu,
            });
            rows.push(Row {
                image,
                state,
                step: "total",
                skiff: sp.plus(su),
                peer: pp.plus(pu),
            });
        }
    }
    drop(reg);
    let _ = fs::remove_dir_all(&work);

    println!("\nskiff pull + image unpack  vs  skopeo copy + umoci unpack (median of {runs} runs; 2 for the large image)");
    println!(
        "{:<30} {:<5} {:<12} | {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8} | {:>7}",
        "image",
        "state",
        "step",
        "wall s",
        "cpu s",
        "RSS MiB",
        "wall s",
        "cpu s",
        "RSS MiB",
        "wall x"
    );
    println!(
        "{:<30} {:<5} {:<12} | {:^26} | {:^26} | {:>7}",
        "", "", "", "skiff", "skopeo + umoci", "skiff/peer"
    );
    for r in rows {
        let f = |c: Cost| {
            format!(
                "{:>8.3} {:>8.3} {:>8.1}",
                c.wall.as_secs_f64(),
                c.cpu.as_secs_f64(),
                c.rss_kib as f64 / 1024.0
            )
        };
        println!(
            "{:<30} {:<5} {:<12} | {} | {} | {:>7.2}",
            r.image,
            r.state,
            r.step,
            f(r.skiff),
            f(r.peer),
            r.skiff.wall.as_secs_f64() / r.peer.wall.as_secs_f64()
        );
    }
}
