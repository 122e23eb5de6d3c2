//! Small helpers for what every benchmark prints: percentiles, the machine, and the record files.

use std::time::Duration;

/// Nearest-rank percentile (`p` in 0..=100) of durations, in milliseconds.
pub fn percentile_ms(samples: &[Duration], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut v: Vec<Duration> = samples.to_vec();
    v.sort_unstable();
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1].as_secs_f64() * 1000.0
}

/// The machine, for the records: CPU model, cores, memory, and the load when the run started.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU".to_string(), |s| s.trim().to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|kb| kb.parse::<f64>().ok()))
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    format!("{model}, {cores} cores, {mem_gb:.0} GB RAM; load average at start {load}")
}

/// Today's date (UTC), `YYYY-MM-DD`.
pub fn today() -> String {
    let days = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() / 86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The command line the script was run with (`BENCH_COMMAND`), for the records.
pub fn command() -> String {
    std::env::var("BENCH_COMMAND").unwrap_or_else(|_| std::env::args().collect::<Vec<_>>().join(" "))
}

/// Writes `text` into `path` between `<!-- begin {tag} -->` and `<!-- end {tag} -->`, replacing an
/// earlier section with the same tag or appending one; the file starts with `title` when it is new.
pub fn record_section(path: &str, title: &str, tag: &str, text: &str) -> std::io::Result<()> {
    let (begin, end) = (format!("<!-- begin {tag} -->"), format!("<!-- end {tag} -->"));
    let section = format!("{begin}\n{}\n{end}\n", text.trim_end());
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| format!("{}\n\n", title.trim_end()));
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(b), Some(e)) if e > b => {
            format!("{}{section}{}", &old[..b], old[e + end.len()..].trim_start_matches('\n'))
        }
        _ => format!("{}\n\n{section}", old.trim_end_matches('\n')),
    };
    std::fs::write(path, new)
}

/// `1234567` -> `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&v, 50.0), 50.0);
        assert_eq!(percentile_ms(&v, 99.0), 99.0);
        assert_eq!(percentile_ms(&v[..1], 99.0), 1.0);
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(200), "200");
        assert_eq!(today().len(), 10);
    }

    #[test]
    fn sections_are_replaced_in_place() {
        let path = std::env::temp_dir().join(format!("bench-record-{}.md", std::process::id()));
        let p = path.to_str().unwrap();
        record_section(p, "# T", "a", "one").unwrap();
        record_section(p, "# T", "b", "two").unwrap();
        record_section(p, "# T", "a", "three").unwrap();
        let text = std::fs::read_to_string(p).unwrap();
        std::fs::remove_file(p).unwrap();
        assert!(text.starts_with("# T\n"));
        assert!(text.contains("three") && text.contains("two") && !text.contains("one"));
        assert!(text.find("three").unwrap() < text.find("two").unwrap());
    }
}
