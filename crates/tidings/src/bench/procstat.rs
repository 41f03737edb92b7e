//! The server's resident memory and CPU time, read from `/proc/PID` (Linux).

use std::time::Duration;

/// One reading of the server's processes, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Sample {
    /// Resident set size, KiB (`VmRSS`).
    pub(crate) rss_kb: u64,
    /// User plus system CPU time.
    pub(crate) cpu: Duration,
}

/// The kernel's clock ticks per second for `/proc/PID/stat` (`USER_HZ`, 100 on every
/// Linux architecture this runs on).
const TICKS_PER_SECOND: u64 = 100;

/// Reads every process of `pids` and sums them; `Err` names the one that is missing.
pub(crate) fn sample(pids: &[u32]) -> Result<Sample, String> {
    let mut total = Sample::default();
    for &pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|err| format!("/proc/{pid}/status: {err}"))?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_err(|err| format!("/proc/{pid}/stat: {err}"))?;
        total.rss_kb +=
            parse_rss_kb(&status).ok_or_else(|| format!("/proc/{pid}/status: no VmRSS"))?;
        total.cpu += parse_cpu(&stat).ok_or_else(|| format!("/proc/{pid}/stat: unreadable"))?;
    }
    Ok(total)
}

fn parse_rss_kb(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line["VmRSS:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn parse_cpu(stat: &str) -> Option<Duration> {
    // The command name (field 2) is in parentheses and may hold spaces: count fields
    // from the last `)`. utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = utime + stime;
    Some(Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND))
}

/// The load average (1, 5 and 15 minutes), or zeros where it cannot be read.
pub(crate) fn load_average() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut fields = text.split_whitespace().map(|f| f.parse().unwrap_or(0.0));
    [
        fields.next().unwrap_or(0.0),
        fields.next().unwrap_or(0.0),
        fields.next().unwrap_or(0.0),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_stat_lines_parse() {
        let status = "Name:\ttidings\nVmPeak:\t  99999 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_rss_kb(status), Some(12345));
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 3 0";
        assert_eq!(parse_cpu(stat), Some(Duration::from_millis(3250)));
        assert_eq!(parse_cpu("garbage"), None);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let me = sample(&[std::process::id()]).unwrap();
        assert!(me.rss_kb > 0);
        assert!(sample(&[u32::MAX]).is_err());
        assert!(load_average()[0] >= 0.0);
    }
}
