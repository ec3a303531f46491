//! One microVM: its KVM objects, memory, devices and vCPU threads, and how it ends.

use std::os::unix::thread::JoinHandleExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_pit_config, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{IoEventAddress, Kvm, VcpuExit, VcpuFd, VmFd};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::boot::initramfs::Initramfs;
use crate::boot::{self, cmdline, mptable, BootEntry};
use crate::cpu;
use crate::devices::bus::{Bus, BusDevice};
use crate::devices::legacy::{ShutdownPort, I8042};
use crate::devices::serial::{ConsoleTail, ConsoleWriter, SerialConsole};
use crate::kvm_host::{self, KvmHostError};
use crate::layout;
use crate::memory::{self, MemoryError};
use crate::seccomp::{self, SeccompError, ThreadKind};
use crate::spec::{SpecError, VmSpec};
use crate::virtio::mmio::{MmioError, MmioTransport, QUEUE_NOTIFY_OFFSET};
use crate::virtio::{GuestMem, VirtioDevice};

/// How the VM ended, when it ended as a VM should.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmExit {
    /// The guest wrote its status byte to the shutdown port.
    PowerOff { status: u8 },
    /// The guest reset the machine: reboot, panic (`panic=-1`), triple fault.
    Reset { reason: &'static str },
    /// The VMM was asked to stop (see [`ExitNotifier::stop`]) on this signal.
    Signal(i32),
}

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error(transparent)]
    Kvm(#[from] KvmHostError),
    #[error("KVM: {what}: {source}")]
    Setup {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("cannot read init {path}: {source}")]
    ReadInit {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} vCPUs requested; KVM here allows at most {1}")]
    KvmCpuLimit(u8, usize),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    #[error(transparent)]
    Cmdline(#[from] cmdline::CmdlineError),
    #[error(transparent)]
    Mptable(#[from] mptable::MptableError),
    #[error(transparent)]
    Cpu(#[from] cpu::CpuError),
    #[error("cannot open the serial console output: {0}")]
    SerialOutput(#[source] std::io::Error),
    #[error("no room for another virtio device (at most {} fit the interrupt lines)", layout::IOAPIC_PINS - layout::VIRTIO_FIRST_IRQ)]
    TooManyDevices,
    #[error("virtio device: {0}")]
    Virtio(#[from] MmioError),
    #[error("cannot create an eventfd: {0}")]
    EventFd(#[source] std::io::Error),
    #[error("cannot start a vCPU thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    #[error("vCPU {index}: KVM_RUN failed: {source}")]
    Run {
        index: u8,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("vCPU {index}: {what}")]
    Guest { index: u8, what: String },
}

/// What vCPU threads and devices report to the thread running the VM.
#[derive(Debug)]
pub enum VmEvent {
    Exit(VmExit),
    Failed(VmError),
}

/// Ends the VM from any thread: devices, vCPUs, a signal-handling thread.
#[derive(Clone)]
pub struct ExitNotifier(Sender<VmEvent>);

impl ExitNotifier {
    pub(crate) fn channel() -> (ExitNotifier, Receiver<VmEvent>) {
        let (tx, rx) = mpsc::channel();
        (ExitNotifier(tx), rx)
    }

    /// Ends the VM with `exit` (the first report wins).
    pub fn stop(&self, exit: VmExit) {
        // The receiver is gone only when the VM has already ended.
        let _ = self.0.send(VmEvent::Exit(exit));
    }

    fn fail(&self, error: VmError) {
        let _ = self.0.send(VmEvent::Failed(error));
    }
}

/// Port and MMIO dispatch shared by all vCPU threads.
struct Buses {
    pio: Bus,
    mmio: Bus,
}

pub struct Vm {
    kvm: Kvm,
    vm: VmFd,
    kernel: PathBuf,
    cpus: u8,
    cmdline_extra: String,
    /// The initramfs (a `newc` cpio holding the spec's init), empty without one.
    initramfs: Vec<u8>,
    mem: GuestMem,
    buses: Buses,
    virtio_windows: Vec<(u64, u64, u32)>,
    serial: Arc<Mutex<SerialConsole>>,
    tail: Arc<Mutex<ConsoleTail>>,
    notifier: ExitNotifier,
    events: Receiver<VmEvent>,
}

/// Where KVM keeps its real-mode TSS (three pages just under the 4 GiB boundary's BIOS area).
const TSS_ADDR: usize = 0xfffb_d000;
/// vCPU threads run KVM_RUN and short exit handlers: a small stack is plenty.
const VCPU_STACK: usize = 256 * 1024;
/// How long to keep kicking vCPUs out of KVM_RUN before giving up on joining them.
const STOP_GRACE: Duration = Duration::from_secs(2);

impl Vm {
    /// Creates the VM `spec` describes, with its memory, legacy devices and initramfs; nothing
    /// runs yet. The spec's devices are the caller's to add ([`Vm::add_virtio_device`]).
    pub fn new(spec: &VmSpec) -> Result<Vm, VmError> {
        spec.validate()?;
        // A missing kernel is the commonest mistake: say so before any KVM error can hide it.
        std::fs::File::open(&spec.kernel).map_err(|source| boot::BootError::ReadKernel {
            path: spec.kernel.clone(),
            source,
        })?;
        let initramfs = match &spec.init {
            Some(init) => Initramfs::from_init_file(init)
                .map_err(|source| VmError::ReadInit {
                    path: init.clone(),
                    source,
                })?
                .finish(),
            None => Vec::new(),
        };
        let setup = |what| move |source| VmError::Setup { what, source };
        let kvm = kvm_host::open_kvm()?;
        let max_vcpus = kvm.get_max_vcpus();
        if usize::from(spec.cpus) > max_vcpus {
            return Err(VmError::KvmCpuLimit(spec.cpus, max_vcpus));
        }
        let vm = kvm.create_vm().map_err(setup("create VM"))?;
        vm.set_tss_address(TSS_ADDR)
            .map_err(setup("set TSS address"))?;
        vm.create_irq_chip()
            .map_err(setup("create in-kernel PIC/IOAPIC"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm.create_pit2(pit).map_err(setup("create in-kernel PIT"))?;
        let mem = memory::create(spec.memory_mib)?;
        memory::register(&vm, &mem)?;

        let (notifier, events) = ExitNotifier::channel();
        let serial_irq = EventFd::new(EFD_NONBLOCK).map_err(VmError::EventFd)?;
        vm.register_irqfd(&serial_irq, layout::SERIAL_IRQ)
            .map_err(setup("serial irqfd"))?;
        let writer = ConsoleWriter::new(&spec.serial).map_err(VmError::SerialOutput)?;
        let tail = writer.tail();
        let serial = Arc::new(Mutex::new(SerialConsole::new(serial_irq, writer)));

        let mut pio = Bus::default();
        let overlap = |e| VmError::Guest {
            index: 0,
            what: format!("device layout: {e}"),
        };
        pio.insert(u64::from(layout::SERIAL_PORT), 8, serial.clone())
            .map_err(overlap)?;
        let i8042 = Arc::new(Mutex::new(I8042::new(notifier.clone())));
        pio.insert(u64::from(layout::I8042_DATA_PORT), 5, i8042)
            .map_err(overlap)?;
        let shutdown = Arc::new(Mutex::new(ShutdownPort::new(notifier.clone())));
        pio.insert(u64::from(layout::SHUTDOWN_PORT), 1, shutdown)
            .map_err(overlap)?;

        Ok(Vm {
            kvm,
            vm,
            kernel: spec.kernel.clone(),
            cpus: spec.cpus,
            cmdline_extra: spec.cmdline_extra.clone(),
            initramfs,
            mem,
            buses: Buses {
                pio,
                mmio: Bus::default(),
            },
            virtio_windows: Vec::new(),
            serial,
            tail,
            notifier,
            events,
        })
    }

    /// Guest memory, e.g. for devices that must be built against it.
    pub fn memory(&self) -> &GuestMem {
        &self.mem
    }

    /// A handle that ends the VM from another thread (e.g. on SIGTERM).
    pub fn exit_notifier(&self) -> ExitNotifier {
        self.notifier.clone()
    }

    /// The last console output (up to 8 KiB); the handle stays readable after the VM ended.
    pub fn console_tail(&self) -> Arc<Mutex<ConsoleTail>> {
        self.tail.clone()
    }

    /// Puts `device` on its own virtio-mmio window with its own interrupt line.
    pub fn add_virtio_device(&mut self, device: Box<dyn VirtioDevice>) -> Result<(), VmError> {
        let setup = |what| move |source| VmError::Setup { what, source };
        let (base, irq) =
            layout::virtio_slot(self.virtio_windows.len()).ok_or(VmError::TooManyDevices)?;
        let irqfd = EventFd::new(EFD_NONBLOCK).map_err(VmError::EventFd)?;
        self.vm
            .register_irqfd(&irqfd, irq)
            .map_err(setup("virtio irqfd"))?;
        let transport = MmioTransport::new(device, self.mem.clone(), irqfd)?;
        for (index, notify) in transport.queue_notifiers().iter().enumerate() {
            let addr = IoEventAddress::Mmio(base + QUEUE_NOTIFY_OFFSET);
            self.vm
                .register_ioevent(notify, &addr, index as u32)
                .map_err(setup("virtio queue ioeventfd"))?;
        }
        tracing::debug!(
            "virtio device type {} at {base:#x}, IRQ {irq}",
            transport.device_type()
        );
        let transport: Arc<Mutex<dyn BusDevice>> = Arc::new(Mutex::new(transport));
        self.buses
            .mmio
            .insert(base, layout::VIRTIO_MMIO_SIZE, transport)
            .map_err(|e| VmError::Guest {
                index: 0,
                what: format!("device layout: {e}"),
            })?;
        self.virtio_windows
            .push((base, layout::VIRTIO_MMIO_SIZE, irq));
        Ok(())
    }

    /// The kernel command line this VM boots with.
    pub fn kernel_cmdline(&self) -> Result<String, VmError> {
        Ok(cmdline::build(&self.virtio_windows, &self.cmdline_extra)?)
    }

    /// Boots the guest and runs it until it powers off, resets, fails, or is stopped.
    pub fn run(mut self) -> Result<VmExit, VmError> {
        let line = self.kernel_cmdline()?;
        tracing::debug!("kernel command line: {line}");
        // Once in guest memory the archive is dead weight for the VM's whole life: free it.
        let initrd = std::mem::take(&mut self.initramfs);
        let entry = boot::load(&self.mem, &self.kernel, &line, &initrd)?;
        drop(initrd);
        mptable::write(&self.mem, self.cpus)?;
        let vcpus = self.create_vcpus(entry)?;
        tracing::debug!(
            "guest loaded; starting {} vCPUs at {:#x}",
            vcpus.len(),
            entry.entry
        );

        install_kick_handler();
        let Vm {
            buses,
            serial,
            notifier,
            events,
            mem,
            vm,
            ..
        } = self;
        let buses = Arc::new(buses);
        let stopping = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::with_capacity(vcpus.len());
        // Each vCPU installs its filter, then waits for the go: the guest runs only once every
        // thread's filter is in, this one's last (a dropped sender means "stop instead").
        let mut go = Vec::with_capacity(vcpus.len());
        for (index, vcpu) in vcpus.into_iter().enumerate() {
            let ctx = VcpuContext {
                index: index as u8,
                buses: buses.clone(),
                notifier: notifier.clone(),
                stopping: stopping.clone(),
            };
            let (start, started) = mpsc::channel::<()>();
            let builder = std::thread::Builder::new()
                .name(format!("vcpu{index}"))
                .stack_size(VCPU_STACK);
            let spawned = seccomp::spawn(builder, ThreadKind::Vcpu, move || {
                if started.recv().is_ok() {
                    ctx.run(vcpu);
                }
            });
            match spawned {
                Ok(t) => {
                    threads.push(t);
                    go.push(start);
                }
                Err(e) => {
                    drop(go);
                    stop_vcpus(&stopping, threads);
                    return Err(VmError::Thread(e));
                }
            }
        }
        drop(notifier);
        if let Err(e) = seccomp::apply(ThreadKind::Main) {
            drop(go);
            stop_vcpus(&stopping, threads);
            return Err(e.into());
        }
        for start in go {
            let _ = start.send(());
        }
        seccomp::self_test_if_asked();
        // The first report decides how the VM ended; every sender lives as long as a vCPU does.
        let outcome = match events.recv() {
            Ok(VmEvent::Exit(exit)) => Ok(exit),
            Ok(VmEvent::Failed(e)) => Err(e),
            Err(_) => Err(VmError::Guest {
                index: 0,
                what: "all vCPUs stopped without a report".into(),
            }),
        };
        tracing::debug!("VM ended: {outcome:?}");
        stop_vcpus(&stopping, threads);
        tracing::debug!("vCPUs stopped");
        serial.lock().unwrap_or_else(|p| p.into_inner()).sync();
        drop((vm, mem));
        outcome
    }

    fn create_vcpus(&self, entry: BootEntry) -> Result<Vec<VcpuFd>, VmError> {
        let base_cpuid = cpu::supported_cpuid(&self.kvm)?;
        let cpus = self.cpus;
        let mut vcpus = Vec::with_capacity(usize::from(cpus));
        for index in 0..cpus {
            let vcpu = self
                .vm
                .create_vcpu(u64::from(index))
                .map_err(|source| VmError::Setup {
                    what: "create vCPU",
                    source,
                })?;
            let boot = (index == 0).then_some(entry);
            cpu::configure(&vcpu, index, cpus, &base_cpuid, &self.mem, boot)?;
            vcpus.push(vcpu);
        }
        Ok(vcpus)
    }
}

/// The signal that kicks a vCPU thread out of KVM_RUN (its handler does nothing: the
/// interrupted ioctl returning EINTR is the point).
pub(crate) fn kick_signal() -> i32 {
    libc::SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

fn install_kick_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Err(e) = vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick) {
            tracing::error!("cannot install the vCPU kick handler: {e}");
        }
    });
}

/// Makes every vCPU thread leave KVM_RUN and return, then joins them.
fn stop_vcpus(stopping: &AtomicBool, threads: Vec<JoinHandle<()>>) {
    stopping.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + STOP_GRACE;
    for t in threads {
        // A kick can land just before the thread enters KVM_RUN; so kick until it is gone.
        while !t.is_finished() {
            if Instant::now() > deadline {
                tracing::warn!("a vCPU thread did not stop; leaving it behind");
                break;
            }
            // SAFETY: the thread is alive (not finished, not joined), so its pthread_t is valid.
            unsafe { libc::pthread_kill(t.as_pthread_t(), kick_signal()) };
            std::thread::sleep(Duration::from_micros(500));
        }
        if t.is_finished() && t.join().is_err() {
            tracing::error!("a vCPU thread panicked");
        }
    }
}

struct VcpuContext {
    index: u8,
    buses: Arc<Buses>,
    notifier: ExitNotifier,
    stopping: Arc<AtomicBool>,
}

/// What a vCPU thread does after handling one exit.
enum Next {
    Continue,
    Stop,
}

const KVM_SYSTEM_EVENT_SHUTDOWN: u32 = 1;
const KVM_SYSTEM_EVENT_RESET: u32 = 2;
const KVM_SYSTEM_EVENT_CRASH: u32 = 3;

impl VcpuContext {
    fn run(self, mut vcpu: VcpuFd) {
        while !self.stopping.load(Ordering::SeqCst) {
            let next = match vcpu.run() {
                Ok(exit) => self.handle(exit),
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    vcpu.set_kvm_immediate_exit(0);
                    Next::Continue
                }
                Err(source) => {
                    self.notifier.fail(VmError::Run {
                        index: self.index,
                        source,
                    });
                    Next::Stop
                }
            };
            if let Next::Stop = next {
                return;
            }
        }
    }

    fn handle(&self, exit: VcpuExit<'_>) -> Next {
        match exit {
            VcpuExit::IoIn(port, data) => {
                self.buses.pio.read(u64::from(port), data);
            }
            VcpuExit::IoOut(port, data) => {
                self.buses.pio.write(u64::from(port), data);
            }
            VcpuExit::MmioRead(addr, data) => {
                if !self.buses.mmio.read(addr, data) {
                    tracing::trace!(
                        "vCPU {}: MMIO read from {addr:#x}: nothing there",
                        self.index
                    );
                }
            }
            VcpuExit::MmioWrite(addr, data) => {
                if !self.buses.mmio.write(addr, data) {
                    tracing::trace!(
                        "vCPU {}: MMIO write to {addr:#x}: nothing there",
                        self.index
                    );
                }
            }
            VcpuExit::Shutdown => {
                self.notifier.stop(VmExit::Reset {
                    reason: "the guest triple-faulted (CPU shutdown)",
                });
                return Next::Stop;
            }
            VcpuExit::SystemEvent(kind, _) => {
                let exit = match kind {
                    KVM_SYSTEM_EVENT_SHUTDOWN => VmExit::PowerOff { status: 0 },
                    KVM_SYSTEM_EVENT_RESET => VmExit::Reset {
                        reason: "the guest reset the machine",
                    },
                    KVM_SYSTEM_EVENT_CRASH => VmExit::Reset {
                        reason: "the guest crashed",
                    },
                    other => return self.fail(format!("unknown system event {other}")),
                };
                self.notifier.stop(exit);
                return Next::Stop;
            }
            VcpuExit::FailEntry(reason, cpu) => {
                return self.fail(format!(
                    "KVM could not enter the guest (hardware reason {reason:#x}, cpu {cpu})"
                ));
            }
            VcpuExit::InternalError => {
                return self.fail(
                    "KVM internal error (the guest did something KVM cannot emulate)".into(),
                );
            }
            VcpuExit::Hlt => {
                // With the in-kernel local APIC a halt never reaches us; if it does, the CPU
                // would never wake up again.
                return self.fail("the guest halted the vCPU with interrupts off".into());
            }
            other => return self.fail(format!("unexpected exit {other:?}")),
        }
        Next::Continue
    }

    fn fail(&self, what: String) -> Next {
        self.notifier.fail(VmError::Guest {
            index: self.index,
            what,
        });
        Next::Stop
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_specs_are_refused_before_touching_kvm() {
        let dir = tempfile::tempdir().unwrap();
        let missing = VmSpec::new(dir.path().join("no-kernel"));
        let err = Vm::new(&missing).err().expect("missing kernel refused");
        assert!(
            matches!(err, VmError::Boot(boot::BootError::ReadKernel { .. })),
            "{err}"
        );
        let mut zero = VmSpec::new(dir.path());
        zero.cpus = 0;
        assert!(matches!(
            Vm::new(&zero).err(),
            Some(VmError::Spec(SpecError::Cpus(0)))
        ));
        let kernel = dir.path().join("vmlinux");
        std::fs::write(&kernel, b"not read yet").unwrap();
        let mut no_init = VmSpec::new(&kernel);
        no_init.init = Some(dir.path().join("no-init"));
        let err = Vm::new(&no_init).err().expect("missing init refused");
        assert!(matches!(err, VmError::ReadInit { .. }), "{err}");
    }
}
