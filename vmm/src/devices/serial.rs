//! The 8250 console (vm-superio's model) and where its output goes.
//!
//! Output is line-buffered towards its sink (one write per line, not per byte), and the last
//! 8 KiB always stay in memory so a guest that dies quietly still leaves its last words.

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use super::bus::BusDevice;

/// How much console output the VMM keeps for its exit report.
pub const TAIL_BYTES: usize = 8192;

/// Where the console goes (in a [`crate::spec::VmSpec`]: `"discard"`, `"stdout"` or
/// `{"file": "/path"}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SerialOutput {
    #[default]
    Discard,
    Stdout,
    File(PathBuf),
}

/// A ring of the last [`TAIL_BYTES`] bytes written.
#[derive(Default)]
pub struct ConsoleTail {
    ring: Vec<u8>,
    /// Next write position once the ring is full.
    next: usize,
}

impl ConsoleTail {
    fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.ring.len() < TAIL_BYTES {
                self.ring.push(b);
            } else {
                self.ring[self.next] = b;
                self.next = (self.next + 1) % TAIL_BYTES;
            }
        }
    }

    /// The kept bytes, oldest first.
    pub fn contents(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.ring.len());
        out.extend_from_slice(&self.ring[self.next..]);
        out.extend_from_slice(&self.ring[..self.next]);
        out
    }
}

enum Sink {
    Discard,
    Stdout,
    File(File),
}

/// The console's byte sink: the tail ring plus the configured output.
pub struct ConsoleWriter {
    sink: Sink,
    line: Vec<u8>,
    tail: Arc<Mutex<ConsoleTail>>,
}

/// Lines longer than this are passed on in pieces.
const LINE_MAX: usize = 1024;

impl ConsoleWriter {
    pub fn new(output: &SerialOutput) -> io::Result<Self> {
        let sink = match output {
            SerialOutput::Discard => Sink::Discard,
            SerialOutput::Stdout => Sink::Stdout,
            SerialOutput::File(p) => Sink::File(File::create(p)?),
        };
        Ok(ConsoleWriter {
            sink,
            line: Vec::with_capacity(LINE_MAX),
            tail: Arc::default(),
        })
    }

    /// The shared tail, readable while the guest runs.
    pub fn tail(&self) -> Arc<Mutex<ConsoleTail>> {
        self.tail.clone()
    }

    /// Passes on what is buffered, partial line included.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.line.is_empty() {
            return Ok(());
        }
        let res = match &mut self.sink {
            Sink::Discard => Ok(()),
            Sink::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(&self.line).and_then(|_| out.flush())
            }
            Sink::File(f) => f.write_all(&self.line),
        };
        self.line.clear();
        res
    }
}

impl Write for ConsoleWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tail
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(buf);
        if matches!(self.sink, Sink::Discard) {
            return Ok(buf.len());
        }
        self.line.extend_from_slice(buf);
        if buf.contains(&b'\n') || self.line.len() >= LINE_MAX {
            self.sync()?;
        }
        Ok(buf.len())
    }

    /// The UART model flushes after every byte; lines are passed on in `write` instead.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The UART's interrupt line: an eventfd registered as irqfd for IRQ 4.
pub struct IrqLine(pub EventFd);

impl Trigger for IrqLine {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// The COM1 UART on the port bus.
pub struct SerialConsole(Serial<IrqLine, NoEvents, ConsoleWriter>);

impl SerialConsole {
    pub fn new(irq: EventFd, writer: ConsoleWriter) -> Self {
        SerialConsole(Serial::new(IrqLine(irq), writer))
    }

    /// Passes on a pending partial line (at VM exit).
    pub fn sync(&mut self) {
        if let Err(e) = self.0.writer_mut().sync() {
            tracing::warn!("cannot write console output: {e}");
        }
    }
}

impl BusDevice for SerialConsole {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (u8::try_from(offset), data) {
            (Ok(off), [b]) => *b = self.0.read(off),
            (_, data) => data.fill(0),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Ok(off), [b]) = (u8::try_from(offset), data) {
            if let Err(e) = self.0.write(off, *b) {
                tracing::debug!("serial write failed: {e:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_bytes_in_order() {
        let mut t = ConsoleTail::default();
        t.push(b"abc");
        assert_eq!(t.contents(), b"abc");
        let big: Vec<u8> = (0..TAIL_BYTES + 100).map(|i| (i % 251) as u8).collect();
        t.push(&big);
        assert_eq!(t.contents(), &big[100..]);
    }

    #[test]
    fn console_writes_lines_to_file_and_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let w = ConsoleWriter::new(&SerialOutput::File(path.clone())).unwrap();
        let tail = w.tail();
        let mut uart = SerialConsole::new(EventFd::new(0).unwrap(), w);
        for b in b"hello\nworld" {
            uart.write(0, &[*b]);
        }
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"hello\n",
            "partial line held back"
        );
        uart.sync();
        assert_eq!(std::fs::read(&path).unwrap(), b"hello\nworld");
        assert_eq!(tail.lock().unwrap().contents(), b"hello\nworld");
    }
}
