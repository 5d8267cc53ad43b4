//! `gpuwarden-cuda-probe`: what one CUDA client gets of a GPU, through the
//! driver API (`libcuda.so.1`, loaded at run time: no CUDA toolkit needed).
//! It allocates device memory in steps until the driver refuses or a bound is
//! reached, reads the driver's free and total memory, then times a
//! compute-bound kernel (PTX, compiled by the driver); it can stay on the GPU
//! for a while (for the watchdog to look), busy or idle. One JSON line on
//! stdout says what happened, the errors by the driver's own names; exit 0
//! when every step ran, 1 when the driver refused one (the JSON says which),
//! 2 for bad arguments, 3 when libcuda cannot be loaded.
//!
//! Under MPS it is an MPS client like any other: `CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`
//! bounds its allocations, `CUDA_MPS_ACTIVE_THREAD_PERCENTAGE` its kernel's share
//! of the SMs. scripts/gpu-proof.sh runs it both ways.

mod cuda;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Map, Value};

const PTX: &str = include_str!("kernel.ptx");
const MIB: usize = 1 << 20;
const THREADS: u32 = 256;

/// Probe one GPU through the CUDA driver API: allocate until refused, time a kernel.
///
/// Prints one JSON line: the device, how much it could allocate and what stopped it,
/// the driver's free/total memory, the kernel's time, and each driver error by name.
/// Examples:
///   gpuwarden-cuda-probe --max-mib 4096
///   CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=3G gpuwarden-cuda-probe --max-mib 6144
///   gpuwarden-cuda-probe --hold-seconds 30 --busy --progress /tmp/kernels
#[derive(Debug, Parser)]
#[command(name = "gpuwarden-cuda-probe", version, max_term_width = 100)]
struct Args {
    /// The CUDA driver library: a path, or a name the dynamic loader finds.
    #[arg(long, default_value = "libcuda.so.1")]
    library: String,
    /// The device's ordinal, as CUDA numbers them (CUDA_VISIBLE_DEVICES applies).
    #[arg(long, default_value_t = 0)]
    device: i32,
    /// The most memory to try to allocate, in MiB (0: none).
    #[arg(long, default_value_t = 16384)]
    max_mib: usize,
    /// Each allocation's size, in MiB.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65536))]
    step_mib: u32,
    /// The kernel's length: dependent FMAs per thread (0: no kernel).
    #[arg(long, default_value_t = 100_000)]
    kernel_iterations: u32,
    /// Blocks of 256 threads per multiprocessor, so the kernel fills every SM.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    blocks_per_sm: u32,
    /// Stay on the GPU this long after the kernel, allocations held.
    #[arg(long, default_value_t = 0)]
    hold_seconds: u64,
    /// While holding, run the kernel back to back (counted) instead of sleeping.
    #[arg(long)]
    busy: bool,
    /// While busy, write the number of kernels finished so far to this file after each.
    #[arg(long, value_name = "FILE")]
    progress: Option<PathBuf>,
    /// Drop this process's own CUDA_MPS_* limits first, as a workload may: under MPS the
    /// daemon's defaults then bind it (for the watchdog's over-share check).
    #[arg(long)]
    drop_mps_limits: bool,
}

fn error_json(e: &cuda::CudaError) -> Value {
    json!({"call": e.call, "code": e.code, "name": e.name})
}

/// Runs the probe, filling `out`; an error ends it where it happened.
fn probe(args: &Args, driver: &cuda::Driver, out: &mut Map<String, Value>) -> Result<(), cuda::CudaError> {
    driver.init()?;
    out.insert("driver_version".into(), driver.driver_version()?.into());
    out.insert("devices".into(), driver.device_count()?.into());
    let (dev, name, total, sms) = driver.device(args.device)?;
    out.insert("device".into(), json!({"ordinal": args.device, "name": name, "total_bytes": total, "multiprocessors": sms}));
    driver.context(dev)?;
    // What the kernel needs comes first: the memory loop leaves nothing behind it.
    let blocks = u32::try_from(sms.max(1)).unwrap_or(1).saturating_mul(args.blocks_per_sm);
    let kernel = if args.kernel_iterations > 0 {
        let f = driver.kernel(PTX, "spin")?;
        let buffer = driver.alloc(blocks as usize * THREADS as usize * 4)?;
        Some((f, buffer))
    } else {
        None
    };
    let step = args.step_mib as usize * MIB;
    let (mut allocated, mut count, mut stopped_by) = (0usize, 0u32, Value::String("max_mib".into()));
    while allocated + step <= args.max_mib * MIB {
        match driver.alloc(step) {
            Ok(_) => {
                allocated += step;
                count += 1;
            }
            Err(e) => {
                stopped_by = error_json(&e);
                break;
            }
        }
    }
    out.insert("allocated_bytes".into(), allocated.into());
    out.insert("allocations".into(), count.into());
    out.insert("allocation_stopped_by".into(), stopped_by);
    let (free, total) = driver.mem_info()?;
    out.insert("memory".into(), json!({"free_bytes": free, "total_bytes": total}));
    if let Some((f, buffer)) = kernel {
        let ms = driver.time_spin(f, buffer, args.kernel_iterations, blocks, THREADS)?;
        out.insert("kernel".into(), json!({"blocks": blocks, "threads_per_block": THREADS, "iterations": args.kernel_iterations, "ms": ms}));
        if args.busy && args.hold_seconds > 0 {
            let until = Instant::now() + Duration::from_secs(args.hold_seconds);
            let mut done = 0u64;
            while Instant::now() < until {
                driver.time_spin(f, buffer, args.kernel_iterations, blocks, THREADS)?;
                done += 1;
                if let Some(p) = &args.progress {
                    let _ = std::fs::write(p, format!("{done}\n"));
                }
            }
            out.insert("busy_kernels".into(), done.into());
        }
    }
    if !args.busy && args.hold_seconds > 0 {
        std::thread::sleep(Duration::from_secs(args.hold_seconds));
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.drop_mps_limits {
        cuda::drop_mps_limits();
    }
    let mut out = Map::new();
    out.insert("library".into(), args.library.clone().into());
    let mps: Map<String, Value> = std::env::vars().filter(|(k, _)| k.starts_with("CUDA_MPS_") || k == "CUDA_VISIBLE_DEVICES").map(|(k, v)| (k, v.into())).collect();
    out.insert("env".into(), Value::Object(mps));
    let failed = match cuda::Driver::load(&args.library) {
        Err(why) => {
            out.insert("errors".into(), json!([{"call": "dlopen", "code": -1, "name": why}]));
            Some((3, format!("dlopen failed: {why}")))
        }
        Ok(driver) => probe(&args, &driver, &mut out).err().map(|e| {
            out.insert("errors".into(), json!([error_json(&e)]));
            (1, format!("{} failed: {}", e.call, e.name))
        }),
    };
    out.insert("ok".into(), failed.is_none().into());
    let mut line = Value::Object(out).to_string();
    line.push('\n');
    let _ = std::io::stdout().lock().write_all(line.as_bytes());
    match failed {
        None => ExitCode::SUCCESS,
        Some((code, why)) => {
            eprintln!("gpuwarden-cuda-probe: {why}");
            ExitCode::from(code)
        }
    }
}
