use super::*;
use crate::stages::{BuildOptions, PlatformArgs};
use crate::Dockerfile;

fn options(args: &[(&str, &str)]) -> BuildOptions {
    BuildOptions {
        build_args: args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        target: None,
        target_platform: PlatformArgs {
            os: "linux".into(),
            arch: "amd64".into(),
            variant: None,
        },
        build_platform: PlatformArgs {
            os: "linux".into(),
            arch: "amd64".into(),
            variant: None,
        },
    }
}

fn base() -> RuntimeConfig {
    RuntimeConfig {
        env: Some(vec!["PATH=/usr/bin:/bin".into()]),
        cmd: Some(vec!["sh".into()]),
        ..RuntimeConfig::default()
    }
}

/// Evaluates the last stage on `base()` and returns its steps and final config.
fn eval(text: &str, args: &[(&str, &str)]) -> Result<(Vec<Step>, RuntimeConfig)> {
    let df = Dockerfile::parse(text.as_bytes())?;
    let plan = df.plan(&options(args))?;
    let stage = *plan.needed.last().unwrap();
    let mut ev = Evaluator::new(&plan, stage, base());
    let mut steps = Vec::new();
    for inst in &plan.stages[stage].instructions.clone() {
        steps.push(ev.step(inst)?);
    }
    Ok((steps, ev.config().clone()))
}

fn run_step(step: &Step) -> &RunStep {
    match &step.action {
        Action::Run(r) => r,
        other => panic!("not a RUN: {other:?}"),
    }
}

#[test]
fn env_expands_with_the_base_image_env() {
    let (steps, cfg) = eval(
        "FROM a\nENV PATH=$PATH:/x A=1 B=${A}2\nENV OLD the  value\n",
        &[],
    )
    .unwrap();
    assert_eq!(
        cfg.env.unwrap(),
        ["PATH=/usr/bin:/bin:/x", "A=1", "B=12", "OLD=the  value"]
    );
    assert_eq!(
        steps[0].created_by,
        "/bin/sh -c #(nop)  ENV PATH=/usr/bin:/bin:/x A=1 B=12"
    );
    assert_eq!(steps[0].action, Action::Config);
}

#[test]
fn args_reach_run_but_not_the_config() {
    let text = "ARG G=global\nFROM a\nARG G\nARG V=1\nARG FROMCLI\nENV V=env\nRUN echo $V $G\n";
    let (steps, cfg) = eval(text, &[("FROMCLI", "c"), ("https_proxy", "http://p")]).unwrap();
    let run = run_step(&steps[4]);
    assert_eq!(run.argv, ["/bin/sh", "-c", "echo $V $G"]);
    assert!(run.env.contains(&"G=global".to_string()));
    assert!(
        run.env.contains(&"V=env".to_string()),
        "ENV beats ARG: {:?}",
        run.env
    );
    assert!(!run.env.contains(&"V=1".to_string()));
    assert!(run.env.contains(&"https_proxy=http://p".to_string()));
    assert_eq!(
        steps[4].created_by,
        "|2 FROMCLI=c G=global /bin/sh -c echo $V $G"
    );
    assert!(cfg
        .env
        .unwrap()
        .iter()
        .all(|e| !e.starts_with("G=") && !e.starts_with("https_proxy")));
    // A global ARG is not visible in a stage that does not redeclare it.
    let (steps, _) = eval("ARG G=global\nFROM a\nENV X=${G:-unset}\n", &[]).unwrap();
    assert!(steps[0].created_by.ends_with("ENV X=unset"));
    // A build arg overrides a default; an ARG default sees earlier ARGs.
    let (steps, _) = eval("FROM a\nARG A=1\nARG B=$A-b\nLABEL b=$B\n", &[("A", "9")]).unwrap();
    assert!(
        steps[2].created_by.ends_with("LABEL b=9-b"),
        "{}",
        steps[2].created_by
    );
}

#[test]
fn metadata_instructions_change_the_config() {
    let text = r#"FROM a
WORKDIR app
WORKDIR ../srv/./x
USER ${NOBODY:-65534}
EXPOSE 80 53/udp 8000-8001
VOLUME ["/data"]
LABEL a="b c"
STOPSIGNAL SIGINT
SHELL ["/bin/bash", "-c"]
ENTRYPOINT run.sh
HEALTHCHECK --timeout=3s CMD true
ONBUILD RUN make
MAINTAINER me
"#;
    let (steps, cfg) = eval(text, &[]).unwrap();
    assert_eq!(steps[0].action, Action::Workdir("/app".into()));
    assert_eq!(cfg.working_dir.as_deref(), Some("/srv/x"));
    assert_eq!(cfg.user.as_deref(), Some("65534"));
    let ports: Vec<_> = cfg.exposed_ports.unwrap().into_keys().collect();
    assert_eq!(ports, ["53/udp", "80/tcp", "8000/tcp", "8001/tcp"]);
    assert!(cfg.volumes.unwrap().contains_key("/data"));
    assert_eq!(cfg.labels.unwrap()["a"], "b c");
    assert_eq!(cfg.stop_signal.as_deref(), Some("SIGINT"));
    assert_eq!(cfg.entrypoint.unwrap(), ["/bin/bash", "-c", "run.sh"]);
    assert_eq!(cfg.cmd, None, "ENTRYPOINT resets the base image's CMD");
    assert_eq!(cfg.healthcheck.unwrap().test, ["CMD-SHELL", "true"]);
    assert_eq!(cfg.on_build.unwrap(), ["RUN make"]);
    assert_eq!(steps[1].created_by, "/bin/sh -c #(nop)  WORKDIR /srv/x");
    assert_eq!(
        steps[3].created_by,
        "/bin/sh -c #(nop)  EXPOSE 53/udp 80/tcp 8000/tcp 8001/tcp"
    );
    assert_eq!(steps[4].created_by, "/bin/sh -c #(nop)  VOLUME [/data]");
    assert_eq!(
        steps[8].created_by,
        r#"/bin/bash -c #(nop)  ENTRYPOINT ["/bin/bash" "-c" "run.sh"]"#
    );
    // CMD before ENTRYPOINT in the same stage survives.
    let (_, cfg) = eval("FROM a\nCMD [\"x\"]\nENTRYPOINT [\"e\"]\n", &[]).unwrap();
    assert_eq!(cfg.cmd.unwrap(), ["x"]);
    let err = eval("FROM a\nEXPOSE 99999\n", &[]).unwrap_err();
    assert_eq!(err.line(), Some(2));
    let err = eval("FROM a\nUSER ${U:?must be set}\n", &[]).unwrap_err();
    assert!(err.to_string().contains("U: must be set"), "{err}");
}

#[test]
fn copy_steps_are_expanded_and_absolute() {
    let text = "FROM a AS b\nFROM a\nWORKDIR /w\nARG D=dst\nCOPY --from=b --chown=$D a* ${D}/\nCOPY x .\nCOPY <<EOF rel\nhi $D\nEOF\n";
    let (steps, _) = eval(text, &[]).unwrap();
    let Action::Copy(c) = &steps[2].action else {
        panic!()
    };
    assert_eq!(
        (c.from.clone(), c.sources.clone(), c.dest.as_str()),
        (Some(CopyFrom::Stage(0)), vec!["a*".to_string()], "/w/dst/")
    );
    assert_eq!(c.chown.as_deref(), Some("dst"));
    let Action::Copy(c) = &steps[3].action else {
        panic!()
    };
    assert_eq!((c.dest.as_str(), c.dest_is_dir), ("/w/", true));
    let Action::Copy(c) = &steps[4].action else {
        panic!()
    };
    assert_eq!(
        (c.dest.as_str(), c.inline.clone()),
        ("/w/rel", vec![("EOF".to_string(), "hi dst\n".to_string())])
    );
    let err = eval("FROM a\nCOPY a b /file\n", &[]).unwrap_err();
    assert!(
        err.to_string()
            .contains("must be a directory and end with a /"),
        "{err}"
    );
}

#[test]
fn run_heredocs_become_what_the_shell_runs() {
    let text = "FROM a\nRUN <<EOF\necho $HOME\nEOF\nRUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF\nRUN cat <<A > /x && cat <<'B'\none\nA\ntwo\nB\n";
    let (steps, _) = eval(text, &[]).unwrap();
    assert_eq!(run_step(&steps[0]).argv, ["/bin/sh", "-c", "echo $HOME\n"]);
    let script = run_step(&steps[1]);
    assert_eq!(script.argv, ["/dev/pipes/EOF"]);
    assert_eq!(
        script.files,
        [(
            "/dev/pipes/EOF".to_string(),
            "#!/usr/bin/env python3\nprint(1)\n".to_string()
        )]
    );
    assert_eq!(
        run_step(&steps[2]).argv[2],
        "cat <<A > /x && cat <<'B'\none\nA\ntwo\nB"
    );
}

#[test]
fn onbuild_triggers_run_in_the_child() {
    let df = Dockerfile::parse(b"FROM parent\nRUN b\n").unwrap();
    let plan = df.plan(&options(&[])).unwrap();
    let ev = Evaluator::new(&plan, 0, base());
    let triggers = ev
        .triggers(&["RUN make".into(), "COPY . /src".into()])
        .unwrap();
    assert_eq!(triggers.len(), 2);
    assert!(matches!(triggers[0].op, Op::Run(_)));
    assert_eq!(triggers[0].line, 1);
    assert!(ev.triggers(&["ONBUILD RUN x".into()]).is_err());
    assert!(ev.triggers(&["FROM x".into()]).is_err());
}
