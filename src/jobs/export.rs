//! `jobs export`: the `[[jobs]]` as another scheduler's entries — crontab lines, systemd
//! service and timer units, Kubernetes CronJobs, Heroku Scheduler entries — for deployments
//! that run assetgc commands without `serve`.

use std::fmt::Write as _;
use std::path::Path;

use chrono::{DateTime, Duration as TimeDelta, TimeZone as _, Timelike as _, Utc};

use crate::config::JobConfig;
use crate::error::{Error, Result};

/// The cron fields of a schedule: (second, minute, hour, day of month, month, day of week).
struct Fields<'a> {
    second: &'a str,
    rest: [&'a str; 5],
}

/// Splits a schedule, nicknames (`@daily`) spelled out.
fn fields(schedule: &str) -> Result<Fields<'_>, String> {
    let s = schedule.trim();
    let spelled = match s.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => Some("0 0 1 1 *"),
        "@monthly" => Some("0 0 1 * *"),
        "@weekly" => Some("0 0 * * 0"),
        "@daily" | "@midnight" => Some("0 0 * * *"),
        "@hourly" => Some("0 * * * *"),
        _ => None,
    };
    let s = spelled.unwrap_or(s);
    let parts: Vec<&str> = s.split_whitespace().collect();
    match parts.as_slice() {
        [m, h, dom, mon, dow] => Ok(Fields {
            second: "0",
            rest: [m, h, dom, mon, dow],
        }),
        [sec, m, h, dom, mon, dow] => Ok(Fields {
            second: sec,
            rest: [m, h, dom, mon, dow],
        }),
        _ => Err(format!("schedule `{schedule}` has neither 5 nor 6 fields")),
    }
}

/// The five classic cron fields, when the schedule has no seconds other than `0` and none of
/// croner's extensions (`L`, `W`, `#`) classic cron lacks.
fn classic(job: &JobConfig, target: &str) -> Result<String, String> {
    let f = fields(&job.schedule)?;
    if f.second != "0" {
        return Err(format!(
            "job `{}`: schedule `{}` has a seconds field; {target} runs at most once a minute and cannot express it",
            job.name, job.schedule
        ));
    }
    let ranges: [(u32, u32, &[&str], u32); 5] = [
        (0, 59, &[], 0),
        (0, 23, &[], 0),
        (1, 31, &[], 1),
        (1, 12, &MONTHS, 1),
        (0, 7, &DAYS, 0),
    ];
    for (p, (lo, hi, names, first)) in f.rest.iter().zip(ranges) {
        expand(p, lo, hi, names, first).map_err(|what| {
            format!(
                "job `{}`: schedule `{}` cannot be written for {target} ({what})",
                job.name, job.schedule
            )
        })?;
    }
    Ok(f.rest
        .iter()
        .map(|p| p.replace('?', "*"))
        .collect::<Vec<_>>()
        .join(" "))
}

/// The command line a job runs, as words: `assetgc [--config ABS] args…`.
fn words(program: &str, config: Option<&Path>, job: &JobConfig) -> Vec<String> {
    let mut w = vec![program.to_string()];
    if let Some(c) = config {
        w.push("--config".into());
        w.push(c.display().to_string());
    }
    w.extend(job.args.iter().cloned());
    w
}

/// `crontab`: one line a job; `CRON_TZ=` before a job whose zone is not UTC.
pub fn crontab(jobs: &[JobConfig], config: Option<&Path>) -> Result<String> {
    let mut out = String::from("# assetgc jobs (assetgc jobs export --format crontab)\n");
    let mut tz_set = false;
    for job in jobs {
        let schedule = classic(job, "cron").map_err(Error::Usage)?;
        let utc = job.tz == chrono_tz::UTC;
        if !utc || tz_set {
            let _ = writeln!(out, "CRON_TZ={}", job.tz.name());
            tz_set = !utc;
        }
        // cron turns an unescaped `%` into a newline.
        let line = shell_words::join(words("assetgc", config, job)).replace('%', "\\%");
        let _ = writeln!(out, "# {}", job.name);
        let _ = writeln!(out, "{schedule}  {line}");
    }
    Ok(out)
}

const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];

/// One cron field as the values it allows; `None` for every value (`*`, `?`).
fn expand(
    field: &str,
    min: u32,
    max: u32,
    names: &[&str],
    first: u32,
) -> Result<Option<Vec<u32>>, String> {
    if field == "*" || field == "?" {
        return Ok(None);
    }
    let value = |s: &str| -> Result<u32, String> {
        if let Ok(n) = s.parse::<u32>() {
            return Ok(n);
        }
        names
            .iter()
            .position(|n| n.eq_ignore_ascii_case(s))
            .and_then(|i| u32::try_from(i).ok())
            .map(|i| i + first)
            .ok_or_else(|| format!("`{s}`"))
    };
    let mut out = Vec::new();
    for item in field.split(',') {
        let (base, step) = match item.split_once('/') {
            Some((b, s)) => (b, Some(s.parse::<u32>().map_err(|_| format!("`{item}`"))?)),
            None => (item, None),
        };
        let (lo, hi) = if base == "*" {
            (min, max)
        } else if let Some((a, b)) = base.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let a = value(base)?;
            (a, if step.is_some() { max } else { a })
        };
        let step = step.unwrap_or(1).max(1);
        if lo < min || hi > max || lo > hi {
            return Err(format!("`{item}`"));
        }
        out.extend((lo..=hi).step_by(step as usize));
    }
    out.sort_unstable();
    out.dedup();
    Ok(Some(out))
}

fn list(values: Option<&Vec<u32>>, width: usize) -> String {
    match values {
        None => "*".into(),
        Some(v) => v
            .iter()
            .map(|n| format!("{n:0width$}"))
            .collect::<Vec<_>>()
            .join(","),
    }
}

/// `OnCalendar=` values for a cron schedule: systemd ANDs a weekday with a day of month where
/// cron ORs them, so a schedule that restricts both becomes two values.
pub fn on_calendar(job: &JobConfig) -> Result<Vec<String>, String> {
    let f = fields(&job.schedule)?;
    let bad = |what: &str| {
        format!(
            "job `{}`: schedule `{}` cannot be written as a systemd calendar ({what})",
            job.name, job.schedule
        )
    };
    let sec = expand(f.second, 0, 59, &[], 0).map_err(|e| bad(&e))?;
    let min = expand(f.rest[0], 0, 59, &[], 0).map_err(|e| bad(&e))?;
    let hour = expand(f.rest[1], 0, 23, &[], 0).map_err(|e| bad(&e))?;
    let dom = expand(f.rest[2], 1, 31, &[], 1).map_err(|e| bad(&e))?;
    let mon = expand(f.rest[3], 1, 12, &MONTHS, 1).map_err(|e| bad(&e))?;
    let dow = expand(f.rest[4], 0, 7, &DAYS, 0).map_err(|e| bad(&e))?;
    let dow = dow.map(|v| {
        let mut d: Vec<u32> = v.into_iter().map(|n| n % 7).collect();
        d.sort_unstable();
        d.dedup();
        d
    });
    let time = format!(
        "{}:{}:{}",
        list(hour.as_ref(), 2),
        list(min.as_ref(), 2),
        list(sec.as_ref(), 2)
    );
    let date = |dom: Option<&Vec<u32>>| format!("*-{}-{}", list(mon.as_ref(), 2), list(dom, 2));
    let zone = job.tz.name();
    let days = |d: &Vec<u32>| {
        d.iter()
            .map(|n| DAYS[*n as usize % 7])
            .collect::<Vec<_>>()
            .join(",")
    };
    Ok(match (&dom, &dow) {
        (Some(_), Some(d)) => vec![
            format!("{} {} {time} {zone}", days(d), date(None)),
            format!("{} {time} {zone}", date(dom.as_ref())),
        ],
        (None, Some(d)) => vec![format!("{} {} {time} {zone}", days(d), date(None))],
        _ => vec![format!("{} {time} {zone}", date(dom.as_ref()))],
    })
}

/// systemd's quoting of one `ExecStart=` word (`%` is a specifier there).
fn systemd_word(w: &str) -> String {
    let w = w.replace('%', "%%");
    if !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+".contains(c))
    {
        return w;
    }
    format!("\"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `systemd`: a `.service` and a `.timer` a job, each after a `# file: NAME` line.
pub fn systemd(jobs: &[JobConfig], config: Option<&Path>, exe: &Path) -> Result<String> {
    let mut out = String::new();
    for job in jobs {
        let calendars = on_calendar(job).map_err(Error::Usage)?;
        let exec = words(&exe.display().to_string(), config, job)
            .iter()
            .map(|w| systemd_word(w))
            .collect::<Vec<_>>()
            .join(" ");
        let unit = format!("assetgc-{}", job.name);
        let _ = write!(
            out,
            "# file: {unit}.service\n[Unit]\nDescription=assetgc job {name}: {command}\n\n[Service]\nType=oneshot\nExecStart={exec}\n# exit 3: the run is complete and found something\nSuccessExitStatus=3\nTimeoutStartSec={timeout}\n\n",
            name = job.name,
            command = job.command.replace('%', "%%"),
            timeout = job.timeout.as_secs().max(1),
        );
        let _ = write!(
            out,
            "# file: {unit}.timer\n[Unit]\nDescription=Schedule of assetgc job {name} ({schedule}, {tz})\n\n[Timer]\n",
            name = job.name,
            schedule = job.schedule,
            tz = job.tz.name(),
        );
        for c in &calendars {
            let _ = writeln!(out, "OnCalendar={c}");
        }
        // A missed run (the machine was off) runs once at boot, as `serve` catches up.
        let _ = write!(
            out,
            "Persistent=true\nUnit={unit}.service\n\n[Install]\nWantedBy=timers.target\n\n"
        );
    }
    Ok(out)
}

/// A name Kubernetes accepts (RFC 1123 label, at most 52 characters for a CronJob).
fn k8s_name(job: &str) -> String {
    let mut n: String = format!("assetgc-{}", job.to_ascii_lowercase())
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    n.truncate(52);
    n.trim_end_matches('-').to_string()
}

fn quoted(s: &str) -> String {
    // A JSON string is a valid YAML double-quoted scalar.
    serde_json::Value::String(s.to_string()).to_string()
}

/// `k8s`: a `batch/v1` CronJob a job, as YAML documents separated by `---`.
pub fn k8s(jobs: &[JobConfig], config: Option<&Path>) -> Result<String> {
    let mut docs = Vec::new();
    for job in jobs {
        let schedule = classic(job, "a Kubernetes CronJob").map_err(Error::Usage)?;
        let args = words("assetgc", config, job)
            .into_iter()
            .skip(1)
            .map(|a| format!("                - {}", quoted(&a)))
            .collect::<Vec<_>>()
            .join("\n");
        docs.push(format!(
            "# job {name}: {command}\napiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: {k8s}\n  labels:\n    app.kubernetes.io/name: assetgc\n    assetgc/job: {job_label}\nspec:\n  schedule: {schedule}\n  timeZone: {tz}\n  concurrencyPolicy: Forbid\n  jobTemplate:\n    spec:\n      activeDeadlineSeconds: {deadline}\n      backoffLimit: 0\n      template:\n        spec:\n          restartPolicy: Never\n          containers:\n            - name: assetgc\n              # an image with the assetgc binary and the config at the path below\n              image: assetgc:latest\n              command: [\"assetgc\"]\n              args:\n{args}\n",
            name = job.name,
            command = job.command.replace('\n', " "),
            k8s = k8s_name(&job.name),
            job_label = quoted(&job.name),
            schedule = quoted(&schedule),
            tz = quoted(job.tz.name()),
            deadline = job.timeout.as_secs().max(1),
        ));
    }
    Ok(docs.join("---\n"))
}

/// What Heroku Scheduler can do: every 10 minutes, hourly at :M0, daily at HH:MM (UTC, on the
/// half hour).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heroku {
    Every10Minutes,
    Hourly { minute: u32 },
    Daily { hour: u32, minute: u32 },
}

impl Heroku {
    pub fn describe(self) -> String {
        match self {
            Heroku::Every10Minutes => "every 10 minutes".into(),
            Heroku::Hourly { minute } => format!("every hour at :{minute:02}"),
            Heroku::Daily { hour, minute } => format!("every day at {hour:02}:{minute:02} UTC"),
        }
    }

    fn matches(self, t: DateTime<Utc>) -> bool {
        t.second() == 0
            && match self {
                Heroku::Every10Minutes => t.minute().is_multiple_of(10),
                Heroku::Hourly { minute } => t.minute() == minute,
                Heroku::Daily { hour, minute } => t.hour() == hour && t.minute() == minute,
            }
    }
}

/// The Heroku frequency nearest a job's schedule, and whether it is the same schedule (judged
/// on the job's next 200 times and the Heroku entry's times between them).
pub fn heroku_frequency(job: &JobConfig, from: DateTime<Utc>) -> (Heroku, bool) {
    let mut times = Vec::new();
    let mut t = from;
    while times.len() < 200 {
        match super::next_after(job, t) {
            Some(n) => {
                times.push(n);
                t = n;
            }
            None => break,
        }
    }
    let Some(&first) = times.first() else {
        return (Heroku::Daily { hour: 0, minute: 0 }, false);
    };
    // The usual gap, not the least: a daily time in a zone with summer time is 23 h apart once
    // a year.
    let mut gaps: Vec<TimeDelta> = times.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort_unstable();
    let gap = gaps
        .get(gaps.len() / 2)
        .copied()
        .unwrap_or(TimeDelta::days(1));
    let freq = if gap < TimeDelta::minutes(60) {
        Heroku::Every10Minutes
    } else if gap < TimeDelta::hours(24) {
        Heroku::Hourly {
            minute: ((first.minute() + 5) / 10 * 10) % 60,
        }
    } else {
        let total = first.hour() * 60 + first.minute();
        let rounded = (total + 15) / 30 * 30 % (24 * 60);
        Heroku::Daily {
            hour: rounded / 60,
            minute: rounded % 60,
        }
    };
    let last = *times.last().unwrap_or(&first);
    let mut exact = times.iter().all(|t| freq.matches(*t));
    if exact {
        // Every Heroku time between the first and the last must be one of the job's.
        let step = match freq {
            Heroku::Every10Minutes => TimeDelta::minutes(10),
            Heroku::Hourly { .. } => TimeDelta::hours(1),
            Heroku::Daily { .. } => TimeDelta::days(1),
        };
        let mut h = first;
        while h <= last {
            if !times.contains(&h) {
                exact = false;
                break;
            }
            h += step;
        }
    }
    (freq, exact)
}

/// `heroku`: one Scheduler entry a job (nearest frequency, a warning when not exact), then the
/// Procfile line for `serve`. Warnings go to stderr too.
pub fn heroku(jobs: &[JobConfig], config: Option<&Path>) -> (String, Vec<String>) {
    let mut out = String::from(
        "# Heroku Scheduler entries (add each with `heroku addons:open scheduler`; it runs in UTC)\n",
    );
    let mut warnings = Vec::new();
    let from = Utc
        .with_ymd_and_hms(2030, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_else(Utc::now);
    for job in jobs {
        let (freq, exact) = heroku_frequency(job, from);
        let _ = writeln!(out, "\njob: {}", job.name);
        let _ = writeln!(out, "frequency: {}", freq.describe());
        let _ = writeln!(
            out,
            "command: {}",
            shell_words::join(words("assetgc", config, job))
        );
        if !exact {
            let w = format!(
                "job `{}`: Heroku Scheduler cannot run `{}` ({}) exactly; nearest: {}",
                job.name,
                job.schedule,
                job.tz.name(),
                freq.describe()
            );
            let _ = writeln!(out, "warning: {w}");
            warnings.push(w);
        }
    }
    out.push_str("\n# Procfile\nweb: assetgc serve --listen 0.0.0.0:$PORT\n");
    (out, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_cron;

    fn job(schedule: &str, tz: chrono_tz::Tz) -> JobConfig {
        JobConfig {
            name: "j".into(),
            schedule: schedule.into(),
            cron: parse_cron(schedule).expect("cron"),
            tz,
            command: "check".into(),
            args: vec!["check".into()],
            timeout: std::time::Duration::from_mins(1),
        }
    }

    #[test]
    fn cron_fields_become_systemd_calendars() {
        assert_eq!(
            on_calendar(&job("*/15 9-17 * * 1-5", chrono_tz::UTC)).unwrap(),
            vec!["Mon,Tue,Wed,Thu,Fri *-*-* 09,10,11,12,13,14,15,16,17:00,15,30,45:00 UTC"]
        );
        // cron ORs a day of month with a weekday; systemd would AND them.
        assert_eq!(
            on_calendar(&job("0 4 1 * SUN", chrono_tz::Europe::Paris)).unwrap(),
            vec![
                "Sun *-*-* 04:00:00 Europe/Paris",
                "*-*-01 04:00:00 Europe/Paris"
            ]
        );
        assert!(on_calendar(&job("0 4 L * *", chrono_tz::UTC)).is_err());
    }

    #[test]
    fn seconds_cannot_go_to_cron() {
        assert!(classic(&job("*/2 * * * * *", chrono_tz::UTC), "cron").is_err());
        assert_eq!(
            classic(&job("0 30 4 * * ?", chrono_tz::UTC), "cron").unwrap(),
            "30 4 * * *"
        );
    }

    #[test]
    fn heroku_takes_the_nearest_frequency() {
        let from = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(
            heroku_frequency(&job("0 4 * * *", chrono_tz::UTC), from),
            (Heroku::Daily { hour: 4, minute: 0 }, true)
        );
        assert_eq!(
            heroku_frequency(&job("*/10 * * * *", chrono_tz::UTC), from),
            (Heroku::Every10Minutes, true)
        );
        assert_eq!(
            heroku_frequency(&job("*/5 * * * *", chrono_tz::UTC), from),
            (Heroku::Every10Minutes, false)
        );
        assert_eq!(
            heroku_frequency(&job("20 * * * *", chrono_tz::UTC), from),
            (Heroku::Hourly { minute: 20 }, true)
        );
        assert!(!heroku_frequency(&job("0 4 * * 1", chrono_tz::UTC), from).1);
        // Paris in winter is UTC+1: 04:00 there is 03:00 UTC, but not in summer.
        let (f, exact) = heroku_frequency(&job("0 4 * * *", chrono_tz::Europe::Paris), from);
        assert_eq!(f, Heroku::Daily { hour: 3, minute: 0 });
        assert!(!exact);
    }
}
