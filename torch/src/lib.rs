//! Rill's LibTorch side, as a C ABI in `librill_torch.so`. The `infer` operator opens this
//! library when a pipeline first needs a model, so the `rill` binary itself does not link
//! LibTorch: every other command starts without loading it (and its CUDA libraries).
//!
//! The calls are few and coarse: load a TorchScript module on a device, run it on one batch,
//! free what was returned. Errors come back as C strings the caller frees with
//! [`rill_torch_free_string`]. No panic crosses the boundary: each call catches them.
//! [`RILL_TORCH_ABI`] changes whenever a signature does; the loader checks it.

use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use tch::{CModule, Device, Kind, Tensor};

/// Version of this interface (see the module docs).
pub const RILL_TORCH_ABI: u32 = 1;

/// One input of a batch: `n × product(shape)` values, f32 or i64.
#[repr(C)]
pub struct RtInput {
    pub data: *const u8,
    /// 0: f32, 1: i64.
    pub kind: u32,
    /// One record's shape (the batch dimension is added in front).
    pub shape: *const i64,
    pub ndim: usize,
}

/// A batch's output: `rows × width` floats, row by row; free it with [`rill_torch_free_output`].
#[repr(C)]
pub struct RtOutput {
    pub values: *mut f32,
    pub len: usize,
    /// The output tensor's shape (at most 4 dimensions are reported).
    pub shape: [i64; 4],
    pub ndim: usize,
}

fn device(code: i64) -> Device {
    if code < 0 {
        Device::Cpu
    } else {
        Device::Cuda(code as usize)
    }
}

/// Stores `msg` in `*err` (if given) for the caller to free.
unsafe fn fail(err: *mut *mut c_char, msg: String) {
    if !err.is_null() {
        *err = CString::new(msg.replace('\0', " ")).expect("no NUL left").into_raw();
    }
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_else(|| "unknown panic".into())
}

#[no_mangle]
pub extern "C" fn rill_torch_abi() -> u32 {
    RILL_TORCH_ABI
}

/// CUDA devices usable now (0 without a GPU or without CUDA support).
#[no_mangle]
pub extern "C" fn rill_torch_cuda_devices() -> i64 {
    catch_unwind(|| if tch::Cuda::is_available() { tch::Cuda::device_count() } else { 0 }).unwrap_or(0)
}

/// Intra-op threads of the calling thread's LibTorch work.
#[no_mangle]
pub extern "C" fn rill_torch_set_threads(n: i32) {
    let _ = catch_unwind(|| tch::set_num_threads(n));
}

/// Loads the TorchScript module at `path` (UTF-8, NUL-terminated) on device `dev` (-1: CPU,
/// N: cuda:N), in eval mode. Null on failure, with `*err` set.
///
/// # Safety
/// `path` is a valid C string; `err` is null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn rill_torch_load(path: *const c_char, dev: i64, err: *mut *mut c_char) -> *mut CModule {
    let path = CStr::from_ptr(path).to_string_lossy().into_owned();
    match catch_unwind(|| CModule::load_on_device(&path, device(dev))) {
        Ok(Ok(mut m)) => {
            m.set_eval();
            Box::into_raw(Box::new(m))
        }
        Ok(Err(e)) => {
            fail(err, e.to_string());
            std::ptr::null_mut()
        }
        Err(p) => {
            fail(err, panic_message(p));
            std::ptr::null_mut()
        }
    }
}

/// Runs `model` on a batch of `n` records (`inputs`, `count` of them) on device `dev`; the
/// output, as f32 on the CPU, goes to `*out`. 0 on success, else -1 with `*err` set.
///
/// # Safety
/// `model` came from [`rill_torch_load`] and is used by one thread at a time; `inputs` points
/// to `count` inputs whose data hold `n × product(shape)` values of their kind; `out` is valid
/// for a write; `err` is null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn rill_torch_forward(model: *mut CModule, dev: i64, n: i64, inputs: *const RtInput, count: usize, out: *mut RtOutput, err: *mut *mut c_char) -> i32 {
    let model = &*model;
    let inputs = std::slice::from_raw_parts(inputs, count);
    let run = AssertUnwindSafe(|| {
        tch::no_grad(|| -> Result<Tensor, tch::TchError> {
            let mut tensors = Vec::with_capacity(inputs.len());
            for input in inputs {
                let shape = std::slice::from_raw_parts(input.shape, input.ndim);
                let per: i64 = shape.iter().product();
                let len = (n * per) as usize;
                let t = match input.kind {
                    1 => Tensor::f_from_slice(std::slice::from_raw_parts(input.data as *const i64, len))?,
                    _ => Tensor::f_from_slice(std::slice::from_raw_parts(input.data as *const f32, len))?,
                };
                let mut full = Vec::with_capacity(shape.len() + 1);
                full.push(n);
                full.extend_from_slice(shape);
                tensors.push(t.f_view(full.as_slice())?.f_to_device(device(dev))?);
            }
            let y = model.forward_ts(&tensors)?;
            y.f_to_kind(Kind::Float)?.f_to_device(Device::Cpu)?.f_contiguous()
        })
    });
    let y = match catch_unwind(run) {
        Ok(Ok(y)) => y,
        Ok(Err(e)) => {
            fail(err, e.to_string());
            return -1;
        }
        Err(p) => {
            fail(err, panic_message(p));
            return -1;
        }
    };
    let size = y.size();
    let values = match Vec::<f32>::try_from(&y.view(-1)) {
        Ok(v) => v,
        Err(e) => {
            fail(err, format!("reading the model's output: {e}"));
            return -1;
        }
    };
    let mut shape = [0i64; 4];
    for (s, d) in shape.iter_mut().zip(&size) {
        *s = *d;
    }
    let mut values = values.into_boxed_slice();
    *out = RtOutput { values: values.as_mut_ptr(), len: values.len(), shape, ndim: size.len() };
    std::mem::forget(values);
    0
}

/// # Safety
/// `out` was filled by [`rill_torch_forward`] and is freed once.
#[no_mangle]
pub unsafe extern "C" fn rill_torch_free_output(out: *mut RtOutput) {
    let o = &mut *out;
    if !o.values.is_null() {
        drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(o.values, o.len)));
        o.values = std::ptr::null_mut();
    }
}

/// # Safety
/// `model` came from [`rill_torch_load`] and is freed once.
#[no_mangle]
pub unsafe extern "C" fn rill_torch_free_model(model: *mut CModule) {
    if !model.is_null() {
        drop(Box::from_raw(model));
    }
}

/// # Safety
/// `s` came from this library (an error message) and is freed once.
#[no_mangle]
pub unsafe extern "C" fn rill_torch_free_string(s: *mut c_char) {
    if !s.is_null() {
        drop(CString::from_raw(s));
    }
}
