//! Dispatch of port-I/O and MMIO exits to the device that owns the address.

use std::sync::{Arc, Mutex};

/// A device reached through port I/O or MMIO; offsets are relative to the device's base.
pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

#[derive(Debug, thiserror::Error)]
#[error("bus range {base:#x}+{len:#x} overlaps another device or wraps around")]
pub struct BusOverlap {
    base: u64,
    len: u64,
}

struct Slot {
    base: u64,
    len: u64,
    device: Arc<Mutex<dyn BusDevice>>,
}

/// Non-overlapping address ranges, each served by one device.
#[derive(Default)]
pub struct Bus {
    slots: Vec<Slot>,
}

impl Bus {
    pub fn insert(
        &mut self,
        base: u64,
        len: u64,
        device: Arc<Mutex<dyn BusDevice>>,
    ) -> Result<(), BusOverlap> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(BusOverlap { base, len })?;
        if self
            .slots
            .iter()
            .any(|s| base < s.base + s.len && s.base < end)
        {
            return Err(BusOverlap { base, len });
        }
        let at = self.slots.partition_point(|s| s.base < base);
        self.slots.insert(at, Slot { base, len, device });
        Ok(())
    }

    fn find(&self, addr: u64) -> Option<(&Slot, u64)> {
        let i = self
            .slots
            .partition_point(|s| s.base <= addr)
            .checked_sub(1)?;
        let slot = &self.slots[i];
        let offset = addr - slot.base;
        (offset < slot.len).then_some((slot, offset))
    }

    /// Reads from the device at `addr`; false (and `data` zeroed) if nothing is there.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        let Some((slot, offset)) = self.find(addr) else {
            data.fill(0);
            return false;
        };
        // A device that panicked while locked is poisoned; the exit still gets answered.
        let mut dev = slot.device.lock().unwrap_or_else(|p| p.into_inner());
        dev.read(offset, data);
        true
    }

    /// Writes to the device at `addr`; false if nothing is there.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        let Some((slot, offset)) = self.find(addr) else {
            return false;
        };
        let mut dev = slot.device.lock().unwrap_or_else(|p| p.into_inner());
        dev.write(offset, data);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo(Vec<(u64, u8)>);
    impl BusDevice for Echo {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.0.push((offset, data[0]));
        }
    }

    #[test]
    fn dispatches_by_range_and_refuses_overlaps() {
        let mut bus = Bus::default();
        let a = Arc::new(Mutex::new(Echo(vec![])));
        bus.insert(0x3f8, 8, a.clone()).unwrap();
        bus.insert(0x60, 5, Arc::new(Mutex::new(Echo(vec![]))))
            .unwrap();
        assert!(bus
            .insert(0x3fc, 8, Arc::new(Mutex::new(Echo(vec![]))))
            .is_err());
        assert!(bus
            .insert(u64::MAX, 2, Arc::new(Mutex::new(Echo(vec![]))))
            .is_err());
        let mut b = [0xffu8; 1];
        assert!(bus.read(0x3fd, &mut b));
        assert_eq!(b, [5]);
        assert!(!bus.read(0x400, &mut b));
        assert_eq!(b, [0]);
        assert!(!bus.read(0x10, &mut b));
        assert!(bus.write(0x3f8, &[7]));
        assert!(!bus.write(0x65, &[7]));
        assert_eq!(a.lock().unwrap().0, vec![(0, 7)]);
    }
}
