//! The CUDA driver API, loaded at run time from `libcuda.so.1` (dlopen): only
//! the calls the probe makes. Each returns the driver's error with the call's
//! name and the driver's own name for the code (`CUDA_ERROR_NO_DEVICE`).
//! This file is the probe's one seam to foreign code: every `unsafe` of the
//! probe is here, each call given pointers that live across it.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};

/// Removes the `CUDA_MPS_*` limits from this process's environment before the
/// driver reads them, as a workload that drops its own limits would: the MPS
/// daemon's defaults then bind it.
pub fn drop_mps_limits() {
    for name in ["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] {
        // SAFETY: called first thing in main, before any other thread exists.
        unsafe { std::env::remove_var(name) };
    }
}

/// What a driver call answered, when it was not success.
#[derive(Clone, Debug)]
pub struct CudaError {
    pub call: &'static str,
    pub code: i32,
    pub name: String,
}

type Ptr = *mut c_void;
type Init = unsafe extern "C" fn(c_uint) -> c_int;
type OutInt = unsafe extern "C" fn(*mut c_int) -> c_int;
type DeviceGet = unsafe extern "C" fn(*mut c_int, c_int) -> c_int;
type DeviceName = unsafe extern "C" fn(*mut c_char, c_int, c_int) -> c_int;
type DeviceMem = unsafe extern "C" fn(*mut usize, c_int) -> c_int;
type DeviceAttr = unsafe extern "C" fn(*mut c_int, c_int, c_int) -> c_int;
type CtxCreate = unsafe extern "C" fn(*mut Ptr, c_uint, c_int) -> c_int;
type MemAlloc = unsafe extern "C" fn(*mut u64, usize) -> c_int;
type MemInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> c_int;
type ModuleLoad = unsafe extern "C" fn(*mut Ptr, *const c_void) -> c_int;
type ModuleFunction = unsafe extern "C" fn(*mut Ptr, Ptr, *const c_char) -> c_int;
type Launch = unsafe extern "C" fn(Ptr, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, Ptr, *mut Ptr, *mut Ptr) -> c_int;
type EventCreate = unsafe extern "C" fn(*mut Ptr, c_uint) -> c_int;
type EventOne = unsafe extern "C" fn(Ptr) -> c_int;
type EventRecord = unsafe extern "C" fn(Ptr, Ptr) -> c_int;
type EventElapsed = unsafe extern "C" fn(*mut f32, Ptr, Ptr) -> c_int;
type ErrorName = unsafe extern "C" fn(c_int, *mut *const c_char) -> c_int;

/// `CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT`.
const MULTIPROCESSOR_COUNT: c_int = 16;

/// The loaded library and the entry points the probe uses.
pub struct Driver {
    init: Init,
    driver_version: OutInt,
    device_count: OutInt,
    device_get: DeviceGet,
    device_name: DeviceName,
    device_mem: DeviceMem,
    device_attr: DeviceAttr,
    ctx_create: CtxCreate,
    mem_alloc: MemAlloc,
    mem_info: MemInfo,
    module_load: ModuleLoad,
    module_function: ModuleFunction,
    launch: Launch,
    event_create: EventCreate,
    event_record: EventRecord,
    event_sync: EventOne,
    event_elapsed: EventElapsed,
    error_name: ErrorName,
}

/// One symbol of `handle` as the function type `T`.
fn symbol<T: Copy>(handle: Ptr, name: &str) -> Result<T, String> {
    let c = CString::new(name).map_err(|e| e.to_string())?;
    // SAFETY: `handle` is a live dlopen handle and `c` a NUL-terminated name.
    let p = unsafe { libc::dlsym(handle, c.as_ptr()) };
    if p.is_null() {
        return Err(format!("{name} is not in the library"));
    }
    assert_eq!(std::mem::size_of::<T>(), std::mem::size_of::<Ptr>(), "a function pointer");
    // SAFETY: `T` is the C signature the CUDA driver API documents for `name`.
    Ok(unsafe { std::mem::transmute_copy::<Ptr, T>(&p) })
}

impl Driver {
    /// Loads `library` (a path or a name the dynamic loader finds).
    pub fn load(library: &str) -> Result<Driver, String> {
        let c = CString::new(library).map_err(|e| e.to_string())?;
        // SAFETY: a NUL-terminated file name; the handle is kept for the process's life.
        let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            // SAFETY: dlerror returns a NUL-terminated string or null, read at once.
            let why = unsafe { libc::dlerror() };
            let why = if why.is_null() { "unknown".into() } else { unsafe { CStr::from_ptr(why) }.to_string_lossy().into_owned() };
            return Err(format!("cannot load {library}: {why}"));
        }
        Ok(Driver {
            init: symbol(handle, "cuInit")?,
            driver_version: symbol(handle, "cuDriverGetVersion")?,
            device_count: symbol(handle, "cuDeviceGetCount")?,
            device_get: symbol(handle, "cuDeviceGet")?,
            device_name: symbol(handle, "cuDeviceGetName")?,
            device_mem: symbol(handle, "cuDeviceTotalMem_v2")?,
            device_attr: symbol(handle, "cuDeviceGetAttribute")?,
            ctx_create: symbol(handle, "cuCtxCreate_v2")?,
            mem_alloc: symbol(handle, "cuMemAlloc_v2")?,
            mem_info: symbol(handle, "cuMemGetInfo_v2")?,
            module_load: symbol(handle, "cuModuleLoadData")?,
            module_function: symbol(handle, "cuModuleGetFunction")?,
            launch: symbol(handle, "cuLaunchKernel")?,
            event_create: symbol(handle, "cuEventCreate")?,
            event_record: symbol(handle, "cuEventRecord")?,
            event_sync: symbol(handle, "cuEventSynchronize")?,
            event_elapsed: symbol(handle, "cuEventElapsedTime")?,
            error_name: symbol(handle, "cuGetErrorName")?,
        })
    }

    fn check(&self, call: &'static str, rc: c_int) -> Result<(), CudaError> {
        if rc == 0 {
            return Ok(());
        }
        let mut name: *const c_char = std::ptr::null();
        // SAFETY: the driver writes a pointer to one of its static strings, or fails.
        let found = unsafe { (self.error_name)(rc, &mut name) } == 0 && !name.is_null();
        let name = if found { unsafe { CStr::from_ptr(name) }.to_string_lossy().into_owned() } else { format!("CUDA error {rc}") };
        Err(CudaError { call, code: rc, name })
    }

    pub fn init(&self) -> Result<(), CudaError> {
        // SAFETY: flags must be 0.
        self.check("cuInit", unsafe { (self.init)(0) })
    }

    pub fn driver_version(&self) -> Result<i32, CudaError> {
        let mut v = 0;
        // SAFETY: writes one int.
        self.check("cuDriverGetVersion", unsafe { (self.driver_version)(&mut v) }).map(|()| v)
    }

    pub fn device_count(&self) -> Result<i32, CudaError> {
        let mut n = 0;
        // SAFETY: writes one int.
        self.check("cuDeviceGetCount", unsafe { (self.device_count)(&mut n) }).map(|()| n)
    }

    /// Device `ordinal`: its handle, name, memory and multiprocessors.
    pub fn device(&self, ordinal: i32) -> Result<(i32, String, usize, i32), CudaError> {
        let mut dev = 0;
        // SAFETY: writes one int.
        self.check("cuDeviceGet", unsafe { (self.device_get)(&mut dev, ordinal) })?;
        let mut name = [0 as c_char; 256];
        // SAFETY: the buffer holds 256 bytes and the driver writes at most that, NUL included.
        self.check("cuDeviceGetName", unsafe { (self.device_name)(name.as_mut_ptr(), 256, dev) })?;
        // SAFETY: NUL-terminated within the buffer (the driver's contract).
        let name = unsafe { CStr::from_ptr(name.as_ptr()) }.to_string_lossy().into_owned();
        let mut total = 0usize;
        // SAFETY: writes one size_t.
        self.check("cuDeviceTotalMem", unsafe { (self.device_mem)(&mut total, dev) })?;
        let mut sms = 0;
        // SAFETY: writes one int.
        self.check("cuDeviceGetAttribute", unsafe { (self.device_attr)(&mut sms, MULTIPROCESSOR_COUNT, dev) })?;
        Ok((dev, name, total, sms))
    }

    /// A context on `dev`, current on this thread from now on.
    pub fn context(&self, dev: i32) -> Result<(), CudaError> {
        let mut ctx: Ptr = std::ptr::null_mut();
        // SAFETY: writes one context handle; flags 0.
        self.check("cuCtxCreate", unsafe { (self.ctx_create)(&mut ctx, 0, dev) })
    }

    /// Device memory of `bytes` (never freed: the process's end frees it).
    pub fn alloc(&self, bytes: usize) -> Result<u64, CudaError> {
        let mut p = 0u64;
        // SAFETY: writes one device pointer.
        self.check("cuMemAlloc", unsafe { (self.mem_alloc)(&mut p, bytes) }).map(|()| p)
    }

    /// (free, total) device memory as the driver sees it for this context.
    pub fn mem_info(&self) -> Result<(usize, usize), CudaError> {
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: writes two size_t.
        self.check("cuMemGetInfo", unsafe { (self.mem_info)(&mut free, &mut total) }).map(|()| (free, total))
    }

    /// The kernel `name` of the PTX text `ptx`.
    pub fn kernel(&self, ptx: &str, name: &str) -> Result<Ptr, CudaError> {
        let text = CString::new(ptx).map_err(|_| CudaError { call: "cuModuleLoadData", code: -1, name: "PTX with a NUL byte".into() })?;
        let mut module: Ptr = std::ptr::null_mut();
        // SAFETY: a NUL-terminated PTX image, read during the call.
        self.check("cuModuleLoadData", unsafe { (self.module_load)(&mut module, text.as_ptr().cast()) })?;
        let name = CString::new(name).map_err(|_| CudaError { call: "cuModuleGetFunction", code: -1, name: "a name with a NUL byte".into() })?;
        let mut f: Ptr = std::ptr::null_mut();
        // SAFETY: a loaded module and a NUL-terminated name.
        self.check("cuModuleGetFunction", unsafe { (self.module_function)(&mut f, module, name.as_ptr()) }).map(|()| f)
    }

    /// Runs `spin(out, iterations)` on `blocks` x `threads` and returns how
    /// long it took on the GPU, in milliseconds (events on the default stream).
    pub fn time_spin(&self, f: Ptr, out: u64, iterations: u32, blocks: u32, threads: u32) -> Result<f32, CudaError> {
        let (mut start, mut end): (Ptr, Ptr) = (std::ptr::null_mut(), std::ptr::null_mut());
        // SAFETY: each writes one event handle; flags 0.
        self.check("cuEventCreate", unsafe { (self.event_create)(&mut start, 0) })?;
        self.check("cuEventCreate", unsafe { (self.event_create)(&mut end, 0) })?;
        let (mut out, mut n) = (out, iterations);
        let mut params: [Ptr; 2] = [(&mut out as *mut u64).cast(), (&mut n as *mut u32).cast()];
        // SAFETY: live events on the default stream (null).
        self.check("cuEventRecord", unsafe { (self.event_record)(start, std::ptr::null_mut()) })?;
        // SAFETY: `params` points at the kernel's two arguments, which live across the call;
        // `out` holds blocks * threads floats (the caller's allocation).
        self.check("cuLaunchKernel", unsafe { (self.launch)(f, blocks, 1, 1, threads, 1, 1, 0, std::ptr::null_mut(), params.as_mut_ptr(), std::ptr::null_mut()) })?;
        self.check("cuEventRecord", unsafe { (self.event_record)(end, std::ptr::null_mut()) })?;
        // SAFETY: a recorded event.
        self.check("cuEventSynchronize", unsafe { (self.event_sync)(end) })?;
        let mut ms = 0f32;
        // SAFETY: two recorded, completed events; writes one float.
        self.check("cuEventElapsedTime", unsafe { (self.event_elapsed)(&mut ms, start, end) }).map(|()| ms)
    }
}
