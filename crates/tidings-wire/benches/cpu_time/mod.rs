//! A criterion [`Measurement`] of the benchmark thread's CPU time, for machines shared with
//! other work: wall time there counts the time the thread waited for a core, CPU time
//! does not (caches and memory bandwidth are still shared, so it is not immune to load).
//!
//! Read from `/proc/thread-self/schedstat` (Linux), whose first field is the thread's
//! time on a CPU in nanoseconds. Select it with `TIDINGS_BENCH_CLOCK=cpu`.

use std::fs;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};

/// Nanoseconds of CPU time of the current thread.
fn thread_cpu_ns() -> u64 {
    let stat = fs::read_to_string("/proc/thread-self/schedstat")
        .expect("TIDINGS_BENCH_CLOCK=cpu needs Linux's /proc/thread-self/schedstat");
    stat.split_whitespace()
        .next()
        .and_then(|ns| ns.parse().ok())
        .expect("schedstat starts with the CPU time in ns")
}

/// Whether `TIDINGS_BENCH_CLOCK=cpu` asks for CPU time rather than wall time.
pub(crate) fn requested() -> bool {
    std::env::var("TIDINGS_BENCH_CLOCK").is_ok_and(|clock| clock == "cpu")
}

/// The thread's CPU time, in nanoseconds like [`WallTime`], whose formatting it reuses.
pub(crate) struct CpuTime;

impl Measurement for CpuTime {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        thread_cpu_ns()
    }

    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns().saturating_sub(start)
    }

    fn add(&self, v1: &u64, v2: &u64) -> u64 {
        v1 + v2
    }

    fn zero(&self) -> u64 {
        0
    }

    fn to_f64(&self, value: &u64) -> f64 {
        // Nanoseconds of one benchmark sample: far below 2^53, so exact.
        *value as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        static WALL_TIME: WallTime = WallTime;
        WALL_TIME.formatter()
    }
}
