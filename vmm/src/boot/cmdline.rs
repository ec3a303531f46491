//! The guest kernel command line.

use crate::layout::CMDLINE_MAX;

/// What every skiff guest boots with: console on the 8250, reboot through the keyboard
/// controller (the VMM sees it), reboot at once on panic (the VMM reports it), little chatter.
pub const BASE: &str = "console=ttyS0 reboot=k panic=-1 quiet";

#[derive(Debug, thiserror::Error)]
pub enum CmdlineError {
    #[error("the kernel command line is {0} bytes long; the kernel reads at most {max}", max = CMDLINE_MAX - 1)]
    TooLong(usize),
    #[error("the kernel command line must not contain NUL or newline characters")]
    BadCharacter,
}

/// Builds `BASE`, one `virtio_mmio.device=` per device window `(base, size, irq)`, then `extra`.
pub fn build(virtio_devices: &[(u64, u64, u32)], extra: &str) -> Result<String, CmdlineError> {
    if extra.contains(['\0', '\n']) {
        return Err(CmdlineError::BadCharacter);
    }
    let mut line = String::from(BASE);
    for (base, size, irq) in virtio_devices {
        line.push_str(&format!(
            " virtio_mmio.device={}K@{base:#x}:{irq}",
            size >> 10
        ));
    }
    let extra = extra.trim();
    if !extra.is_empty() {
        line.push(' ');
        line.push_str(extra);
    }
    if line.len() >= CMDLINE_MAX {
        return Err(CmdlineError::TooLong(line.len()));
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_and_extra_follow_the_base() {
        let line = build(
            &[(0xd000_0000, 0x1000, 5), (0xd000_1000, 0x1000, 6)],
            " init.debug=1 ",
        )
        .unwrap();
        assert_eq!(
            line,
            "console=ttyS0 reboot=k panic=-1 quiet virtio_mmio.device=4K@0xd0000000:5 \
             virtio_mmio.device=4K@0xd0001000:6 init.debug=1"
        );
        assert_eq!(build(&[], "").unwrap(), BASE);
    }

    #[test]
    fn overlong_or_odd_lines_are_refused() {
        assert!(matches!(
            build(&[], &"x".repeat(CMDLINE_MAX)),
            Err(CmdlineError::TooLong(_))
        ));
        assert!(matches!(
            build(&[], "a\nb"),
            Err(CmdlineError::BadCharacter)
        ));
    }
}
