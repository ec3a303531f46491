//! The two legacy ways a guest ends itself: the i8042 reset line (`reboot=k`, and so every
//! panic with `panic=-1`) and skiff's shutdown port, which guest-init writes as its last act.

use super::bus::BusDevice;
use crate::vm::{ExitNotifier, VmExit};

/// The i8042 keyboard controller, reduced to its reset line: command 0xFE on port 0x64.
pub struct I8042 {
    exit: ExitNotifier,
}

const CMD_OFFSET: u64 = 4;
const CMD_RESET_CPU: u8 = 0xfe;

impl I8042 {
    pub fn new(exit: ExitNotifier) -> Self {
        I8042 { exit }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Status 0: output buffer empty and input buffer free, so the guest never waits on us.
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == CMD_OFFSET && data.first() == Some(&CMD_RESET_CPU) {
            self.exit.stop(VmExit::Reset {
                reason: "the guest reset the machine (i8042)",
            });
        }
    }
}

/// I/O port 0x510: a 1-byte write is an orderly power-off carrying guest-init's status byte.
pub struct ShutdownPort {
    exit: ExitNotifier,
}

impl ShutdownPort {
    pub fn new(exit: ExitNotifier) -> Self {
        ShutdownPort { exit }
    }
}

impl BusDevice for ShutdownPort {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        if let [status] = data {
            self.exit.stop(VmExit::PowerOff { status: *status });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::VmEvent;

    #[test]
    fn reset_and_power_off_reach_the_vm() {
        let (notifier, events) = ExitNotifier::channel();
        let mut kbd = I8042::new(notifier.clone());
        kbd.write(0, &[0xfe]);
        kbd.write(4, &[0xd1]);
        let mut status = [0xffu8];
        kbd.read(4, &mut status);
        assert_eq!(status, [0]);
        assert!(
            events.try_recv().is_err(),
            "only 0xFE on the command port resets"
        );
        kbd.write(4, &[0xfe]);
        assert!(matches!(
            events.try_recv(),
            Ok(VmEvent::Exit(VmExit::Reset { .. }))
        ));

        let mut port = ShutdownPort::new(notifier);
        port.write(0, &[1, 2]);
        assert!(
            events.try_recv().is_err(),
            "wider writes are not the power-off"
        );
        port.write(0, &[3]);
        assert!(matches!(
            events.try_recv(),
            Ok(VmEvent::Exit(VmExit::PowerOff { status: 3 }))
        ));
    }
}
