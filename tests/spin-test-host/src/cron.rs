//! Cron expressions as the Spin cron trigger reads them: exactly six fields
//! (`sec min hour day-of-month month day-of-week`), evaluated in UTC. The host validates them
//! at load time like the plugin does; ticks are fired by the test ([`crate::TestHost::cron_tick`]).

use anyhow::{Result, bail};

#[derive(Debug, Clone)]
pub struct Schedule;

const RANGES: [(u32, u32); 6] = [(0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 7)];

impl Schedule {
    pub fn parse(expr: &str) -> Result<Schedule> {
        let fields: Vec<&str> = expr.split_whitespace().collect();
        if fields.len() != 6 {
            bail!(
                "cron expression `{expr}` must have exactly 6 fields (seconds first), found {}",
                fields.len()
            );
        }
        for (field, (lo, hi)) in fields.iter().zip(RANGES) {
            for part in field.split(',') {
                let (range, step) = match part.split_once('/') {
                    Some((r, s)) => (r, Some(s)),
                    None => (part, None),
                };
                if let Some(s) = step
                    && s.parse::<u32>().map_or(true, |s| s == 0)
                {
                    bail!("cron expression `{expr}`: bad step in `{part}`");
                }
                if range == "*" || range == "?" {
                    continue;
                }
                let nums: Vec<&str> = range.split('-').collect();
                if nums.is_empty() || nums.len() > 2 {
                    bail!("cron expression `{expr}`: bad field `{part}`");
                }
                for n in nums {
                    // Month and weekday names are accepted by croner.
                    if n.chars().all(|c| c.is_ascii_alphabetic()) && n.len() == 3 {
                        continue;
                    }
                    match n.parse::<u32>() {
                        Ok(v) if (lo..=hi).contains(&v) => {}
                        _ => bail!("cron expression `{expr}`: `{part}` out of range {lo}-{hi}"),
                    }
                }
            }
        }
        Ok(Schedule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_fields_only() {
        assert!(Schedule::parse("*/30 * * * * *").is_ok());
        assert!(Schedule::parse("0 */5 * * * MON-FRI").is_ok());
        assert!(Schedule::parse("*/5 * * * *").is_err());
        assert!(Schedule::parse("0 0 0 1 1 * 2030").is_err());
        assert!(Schedule::parse("61 * * * * *").is_err());
    }
}
