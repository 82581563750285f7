//! LibTorch, opened when a pipeline first needs a model: `librill_torch.so` (the `rill-torch`
//! crate, which links LibTorch) is loaded at run time, so that no other command of `rill` pays
//! for loading LibTorch and its CUDA libraries (about 0.4 s and 450 MB at start).
//!
//! Where the library is looked for: `RILL_TORCH_LIB` (its path), else beside the running
//! program and in the folder above it (`target/<profile>/` for the `rill` binary and for test
//! binaries in `deps/`), which is where `cargo build` puts it.

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libloading::Library;

use super::worker::{BatchInput, InputData};

/// The interface version this side speaks (`rill-torch`'s `RILL_TORCH_ABI`).
const ABI: u32 = 1;

const LIBRARY: &str = "librill_torch.so";

#[repr(C)]
struct RtInput {
    data: *const u8,
    kind: u32,
    shape: *const i64,
    ndim: usize,
}

#[repr(C)]
struct RtOutput {
    values: *mut f32,
    len: usize,
    shape: [i64; 4],
    ndim: usize,
}

type Err = *mut *mut c_char;

/// The library's entry points (see the `rill-torch` crate for their contracts).
pub(crate) struct Torch {
    _lib: Library,
    cuda_devices: unsafe extern "C" fn() -> i64,
    set_threads: unsafe extern "C" fn(i32),
    load: unsafe extern "C" fn(*const c_char, i64, Err) -> *mut c_void,
    forward: unsafe extern "C" fn(*mut c_void, i64, i64, *const RtInput, usize, *mut RtOutput, Err) -> i32,
    free_output: unsafe extern "C" fn(*mut RtOutput),
    free_model: unsafe extern "C" fn(*mut c_void),
    free_string: unsafe extern "C" fn(*mut c_char),
}

/// Where a model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Device {
    Cpu,
    Cuda(usize),
}

impl Device {
    pub(crate) fn is_cuda(self) -> bool {
        matches!(self, Device::Cuda(_))
    }

    fn code(self) -> i64 {
        match self {
            Device::Cpu => -1,
            Device::Cuda(i) => i as i64,
        }
    }
}

/// A loaded TorchScript module; freed when dropped.
pub(crate) struct Model {
    ptr: *mut c_void,
    torch: &'static Torch,
}

// SAFETY: a LibTorch module may move between threads; the worker that owns it is its only user.
unsafe impl Send for Model {}

impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `load` and is freed once, here.
        unsafe { (self.torch.free_model)(self.ptr) }
    }
}

fn candidates() -> Vec<PathBuf> {
    if let Some(p) = std::env::var_os("RILL_TORCH_LIB") {
        return vec![PathBuf::from(p)];
    }
    let exe = std::env::current_exe().ok();
    let dir = exe.as_deref().and_then(Path::parent);
    dir.into_iter().flat_map(|d| [Some(d.to_path_buf()), d.parent().map(Path::to_path_buf)]).flatten().map(|d| d.join(LIBRARY)).collect()
}

fn open() -> Result<Torch, String> {
    let tried = candidates();
    let Some(path) = tried.iter().find(|p| p.is_file()) else {
        let list: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
        return Err(format!(
            "`infer` needs Rill's LibTorch library {LIBRARY}, which is not at {} (`cargo build` builds it with `rill`, or `cargo build -p rill-torch`; RILL_TORCH_LIB names another one)",
            list.join(" or ")
        ));
    };
    // SAFETY: loading our own library, whose initialisers are LibTorch's.
    let lib = unsafe { Library::new(path) }.map_err(|e| format!("cannot load {}: {e}", path.display()))?;
    // SAFETY: the symbols are those of `rill-torch`, with the signatures of its ABI version,
    // checked first.
    unsafe {
        let abi = *lib.get::<unsafe extern "C" fn() -> u32>(b"rill_torch_abi").map_err(|e| format!("{}: {e}", path.display()))?;
        if abi() != ABI {
            return Err(format!("{} speaks interface {}, this rill {ABI}: rebuild them together", path.display(), abi()));
        }
        macro_rules! sym {
            ($name:literal) => {
                *lib.get($name).map_err(|e| format!("{}: {e}", path.display()))?
            };
        }
        Ok(Torch {
            cuda_devices: sym!(b"rill_torch_cuda_devices"),
            set_threads: sym!(b"rill_torch_set_threads"),
            load: sym!(b"rill_torch_load"),
            forward: sym!(b"rill_torch_forward"),
            free_output: sym!(b"rill_torch_free_output"),
            free_model: sym!(b"rill_torch_free_model"),
            free_string: sym!(b"rill_torch_free_string"),
            _lib: lib,
        })
    }
}

/// LibTorch, loaded on first use (once per process).
pub(crate) fn torch() -> Result<&'static Torch, String> {
    static TORCH: OnceLock<Result<Torch, String>> = OnceLock::new();
    TORCH.get_or_init(open).as_ref().map_err(Clone::clone)
}

impl Torch {
    /// Takes the message a failed call left in `err`.
    fn message(&self, err: *mut c_char) -> String {
        if err.is_null() {
            return "LibTorch failed without a message".into();
        }
        // SAFETY: `err` is a C string from the library, freed once, here.
        unsafe {
            let s = CStr::from_ptr(err).to_string_lossy().into_owned();
            (self.free_string)(err);
            s
        }
    }

    pub(crate) fn cuda_devices(&self) -> usize {
        // SAFETY: no arguments; the library catches panics.
        unsafe { (self.cuda_devices)() }.max(0) as usize
    }

    /// Intra-op threads for LibTorch work on the calling thread.
    pub(crate) fn set_threads(&self, n: usize) {
        // SAFETY: a plain number.
        unsafe { (self.set_threads)(n as i32) }
    }

    pub(crate) fn load(&'static self, path: &Path, device: Device) -> Result<Model, String> {
        let c = CString::new(path.to_string_lossy().as_bytes()).map_err(|_| format!("model path {} holds a NUL byte", path.display()))?;
        let mut err = std::ptr::null_mut();
        // SAFETY: a valid C string and an out-pointer for the error.
        let ptr = unsafe { (self.load)(c.as_ptr(), device.code(), &mut err) };
        if ptr.is_null() {
            return Err(self.message(err));
        }
        Ok(Model { ptr, torch: self })
    }

    /// Runs `model` on a batch of `n` records; the output's values (f32) and shape.
    pub(crate) fn forward(&self, model: &Model, device: Device, n: usize, inputs: &[BatchInput]) -> Result<(Vec<f32>, Vec<i64>), String> {
        let raw: Vec<RtInput> = inputs
            .iter()
            .map(|i| {
                let (data, kind) = match &i.data {
                    InputData::F32(v) => (v.as_ptr() as *const u8, 0),
                    InputData::I64(v) => (v.as_ptr() as *const u8, 1),
                };
                RtInput { data, kind, shape: i.shape.as_ptr(), ndim: i.shape.len() }
            })
            .collect();
        let mut out = RtOutput { values: std::ptr::null_mut(), len: 0, shape: [0; 4], ndim: 0 };
        let mut err = std::ptr::null_mut();
        // SAFETY: `model` is ours and used by this thread only; every input holds n records of
        // its shape (the worker built them so) and outlives the call; `out` and `err` are
        // valid out-pointers.
        let rc = unsafe { (self.forward)(model.ptr, device.code(), n as i64, raw.as_ptr(), raw.len(), &mut out, &mut err) };
        if rc != 0 {
            return Err(self.message(err));
        }
        // SAFETY: on success `out` holds `len` floats the library allocated; copied, then freed.
        let values = unsafe { std::slice::from_raw_parts(out.values, out.len).to_vec() };
        let shape = out.shape[..out.ndim.min(4)].to_vec();
        // SAFETY: filled by `forward`, freed once.
        unsafe { (self.free_output)(&mut out) };
        Ok((values, shape))
    }
}
