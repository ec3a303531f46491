use super::*;
use crate::Dockerfile;

fn plan(text: &str, options: &BuildOptions) -> Result<Plan> {
    Dockerfile::parse(text.as_bytes())?.plan(options)
}

fn opts(args: &[(&str, &str)], target: Option<&str>) -> BuildOptions {
    BuildOptions {
        build_args: args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        target: target.map(str::to_string),
        target_platform: PlatformArgs {
            os: "linux".into(),
            arch: "arm64".into(),
            variant: Some("v8".into()),
        },
        build_platform: PlatformArgs {
            os: "linux".into(),
            arch: "amd64".into(),
            variant: None,
        },
    }
}

const MULTI: &str = "\
ARG BASE=alpine
ARG TAG=3.20
FROM --platform=$BUILDPLATFORM ${BASE}:${TAG} AS build
RUN make
FROM scratch AS unused
COPY --from=build /x /x
FROM build AS test
RUN make test
FROM debian
COPY --from=build /app /app
COPY --from=0 /lib /lib
COPY --from=busybox:1.36 /bin/sh /bin/sh
";

#[test]
fn stages_bases_and_what_the_target_needs() {
    let p = plan(MULTI, &opts(&[], None)).unwrap();
    assert_eq!(p.stages.len(), 4);
    assert_eq!(p.stages[0].base, Base::Image("alpine:3.20".into()));
    assert_eq!(p.stages[0].platform.as_deref(), Some("linux/amd64"));
    assert_eq!(p.stages[1].base, Base::Scratch);
    assert_eq!(p.stages[2].base, Base::Stage(0));
    assert_eq!(p.stages[3].base, Base::Image("debian".into()));
    assert_eq!(p.needed, [0, 3], "the unused and test stages are skipped");
    let p = plan(MULTI, &opts(&[("TAG", "edge")], Some("TEST"))).unwrap();
    assert_eq!(p.needed, [0, 2]);
    assert_eq!(p.stages[0].base, Base::Image("alpine:edge".into()));
    assert_eq!(p.unused_build_args_warning(), None);
    let err = plan(MULTI, &opts(&[], Some("nope"))).unwrap_err();
    assert_eq!(err.to_string(), "target stage \"nope\" could not be found");
}

#[test]
fn bad_stage_references() {
    let forward = "FROM a AS one\nCOPY --from=two /x /x\nFROM b AS two\n";
    let err = plan(forward, &opts(&[], Some("one"))).unwrap_err();
    assert_eq!(err.line(), Some(2));
    assert!(
        err.to_string().contains("referenced before it is defined"),
        "{err}"
    );
    let err = plan("FROM a\nCOPY --from=0 /x /x\n", &opts(&[], None)).unwrap_err();
    assert!(err.to_string().contains("invalid stage index 0"), "{err}");
    let err = plan("FROM a AS x\nFROM b AS x\n", &opts(&[], None)).unwrap_err();
    assert!(err.to_string().contains("duplicate stage name"), "{err}");
    let err = plan("ARG A\nRUN x\nFROM a\n", &opts(&[], None)).unwrap_err();
    assert_eq!(err.line(), Some(2));
    let err = plan("ARG A\n", &opts(&[], None)).unwrap_err();
    assert!(err.to_string().contains("no build stage"), "{err}");
    let err = plan("ARG IMG\nFROM $IMG\n", &opts(&[], None)).unwrap_err();
    assert!(err.to_string().contains("should not be blank"), "{err}");
}

#[test]
fn build_args_and_their_warning() {
    let text = "ARG V=1\nFROM alpine:$V\nARG USED\nFROM alpine AS other\nARG ONLY_OTHER\n";
    let p = plan(
        text,
        &opts(
            &[
                ("USED", "x"),
                ("EXTRA", "y"),
                ("ONLY_OTHER", "z"),
                ("HTTP_PROXY", "p"),
            ],
            Some("other"),
        ),
    )
    .unwrap();
    assert_eq!(
        p.unused_build_args_warning().as_deref(),
        Some("[Warning] One or more build-args [EXTRA USED] were not consumed")
    );
    // Platform args are known in FROM lines without being declared.
    let p = plan("FROM img-$TARGETARCH$TARGETVARIANT\n", &opts(&[], None)).unwrap();
    assert_eq!(p.stages[0].base, Base::Image("img-arm64v8".into()));
}
