//! `recordings play` and `recordings cat`: a recording's output replayed with its timing, or
//! printed as plain text. Time is integer microseconds throughout; the speed is an exact
//! fraction, so a long replay does not drift by rounding.

use std::collections::VecDeque;
use std::time::Duration;

use airlock_recordings::ansi::Stripper;
use airlock_recordings::asciicast::{parse_event, parse_time, Event, EventCode};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::cast::Lines;
use crate::fetch::Fetcher;

/// Longest event line accepted (our recorder writes far shorter ones).
const MAX_LINE: usize = 16 << 20;

/// A playback speed as an exact fraction `num / den`, greater than zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Speed {
    num: u64,
    den: u64,
}

impl Speed {
    /// The recorded pace.
    pub const NORMAL: Speed = Speed { num: 1, den: 1 };
}

/// Parses a speed written as a decimal (`2`, `0.5`, `1.25`) into an exact fraction.
pub fn parse_speed(text: &str) -> Result<Speed, String> {
    let bad = || format!("{text:?} is not a speed: give a decimal number such as 2 or 0.5");
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.len() + frac.len() == 0 || (text.contains('.') && frac.is_empty()) || !digits(int) || !digits(frac)
    {
        return Err(bad());
    }
    if int.len() > 6 || frac.len() > 6 {
        return Err(format!("{text:?}: at most 6 digits before and after the point"));
    }
    let num: u64 = format!("{int}{frac}").parse().map_err(|_| bad())?;
    if num == 0 {
        return Err("the speed must be greater than 0".to_owned());
    }
    Ok(Speed { num, den: 10u64.pow(frac.len() as u32) })
}

/// Parses a duration in decimal seconds (`2`, `0.25`) into microseconds.
pub fn parse_seconds(text: &str) -> Result<u64, String> {
    if text.split_once('.').is_some_and(|(_, f)| f.len() > 6) {
        return Err(format!("{text:?}: at most 6 decimals (microseconds)"));
    }
    parse_time(text).ok_or_else(|| format!("{text:?} is not a number of seconds"))
}

/// Turns recorded event times into waits: the gaps between events, each pause longer than
/// the idle limit shortened to it, divided by the speed. The idle limit applies to recorded
/// time, before the speed (as asciinema's does).
#[derive(Debug, Clone)]
pub struct Pacer {
    speed: Speed,
    idle_limit_us: Option<u64>,
    last_us: u64,
    /// Recorded time so far, pauses shortened.
    recorded_us: u128,
    /// Playback time handed out so far; waits are differences of exact totals, so rounding
    /// never accumulates.
    played_us: u64,
}

impl Pacer {
    /// A pacer at the start of a recording.
    pub fn new(speed: Speed, idle_limit_us: Option<u64>) -> Self {
        Pacer { speed, idle_limit_us, last_us: 0, recorded_us: 0, played_us: 0 }
    }

    /// How long to wait, after the previous event, before showing one recorded at `time_us`.
    pub fn wait_before(&mut self, time_us: u64) -> u64 {
        // Times never go backwards in our recordings; if another recorder's do, no wait.
        let gap = time_us.saturating_sub(self.last_us);
        self.last_us = self.last_us.max(time_us);
        let gap = self.idle_limit_us.map_or(gap, |limit| gap.min(limit));
        self.recorded_us += u128::from(gap);
        let total = self.recorded_us * u128::from(self.speed.den) / u128::from(self.speed.num);
        let total = u64::try_from(total).unwrap_or(u64::MAX);
        let wait = total.saturating_sub(self.played_us);
        self.played_us = total;
        wait
    }
}

/// The waits before each of the events recorded at `times_us`.
pub fn delays(times_us: &[u64], speed: Speed, idle_limit_us: Option<u64>) -> Vec<u64> {
    let mut pacer = Pacer::new(speed, idle_limit_us);
    times_us.iter().map(|&t| pacer.wait_before(t)).collect()
}

/// A recording's events, read chunk by chunk.
pub struct Events<'a> {
    fetcher: Fetcher<'a>,
    lines: Lines,
    queue: VecDeque<String>,
    done: bool,
}

impl<'a> Events<'a> {
    /// The events of what `fetcher` reads.
    pub fn new(fetcher: Fetcher<'a>) -> Self {
        Events { fetcher, lines: Lines::new(MAX_LINE), queue: VecDeque::new(), done: false }
    }

    /// The next event; the header and unreadable lines are skipped.
    pub async fn next(&mut self) -> anyhow::Result<Option<Event>> {
        loop {
            if let Some(line) = self.queue.pop_front() {
                match parse_event(&line) {
                    Some(e) => return Ok(Some(e)),
                    None => continue,
                }
            }
            if self.done {
                return Ok(None);
            }
            match self.fetcher.next().await? {
                Some(chunk) => self.queue.extend(self.lines.push(&chunk)?),
                None => {
                    self.done = true;
                    self.queue.extend(self.lines.finish());
                }
            }
        }
    }
}

/// Writes the output events to `out` at their recorded pace (see [`Pacer`]).
pub async fn play(
    mut events: Events<'_>,
    speed: Speed,
    idle_limit_us: Option<u64>,
    out: &mut (impl AsyncWrite + Unpin),
) -> anyhow::Result<()> {
    let mut pacer = Pacer::new(speed, idle_limit_us);
    let start = tokio::time::Instant::now();
    let mut due_us: u64 = 0;
    while let Some(event) = events.next().await? {
        if event.code != Some(EventCode::Output) {
            continue;
        }
        due_us = due_us.saturating_add(pacer.wait_before(event.time_us));
        // Deadlines from one start: time spent fetching or writing is caught up, not added.
        tokio::time::sleep_until(start + Duration::from_micros(due_us)).await;
        out.write_all(event.data.as_bytes()).await?;
        out.flush().await?;
    }
    Ok(())
}

/// Writes the output events to `out` as plain text, escape sequences removed.
pub async fn cat(mut events: Events<'_>, out: &mut (impl AsyncWrite + Unpin)) -> anyhow::Result<()> {
    let mut stripper = Stripper::new();
    let mut text = String::new();
    while let Some(event) = events.next().await? {
        if event.code == Some(EventCode::Output) {
            stripper.push(&event.data, &mut text);
        }
        if text.len() >= 64 << 10 {
            out.write_all(text.as_bytes()).await?;
            text.clear();
        }
    }
    stripper.finish(&mut text);
    out.write_all(text.as_bytes()).await?;
    out.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn speed(s: &str) -> Speed {
        parse_speed(s).unwrap()
    }

    #[test]
    fn speeds_are_exact_fractions() {
        assert_eq!(speed("2"), Speed { num: 2, den: 1 });
        assert_eq!(speed("0.5"), Speed { num: 5, den: 10 });
        assert_eq!(speed("1.25"), Speed { num: 125, den: 100 });
        assert_eq!(speed("100"), Speed { num: 100, den: 1 });
        for bad in ["", "0", "0.0", "-1", "1e2", "2.", ".", "abc", "1.2.3", "1234567", "0.1234567", "inf"] {
            assert!(parse_speed(bad).is_err(), "{bad:?}");
        }
        assert_eq!(speed(".5"), Speed { num: 5, den: 10 }, "a leading point is fine");
    }

    #[test]
    fn seconds_parse_to_microseconds() {
        assert_eq!(parse_seconds("2"), Ok(2_000_000));
        assert_eq!(parse_seconds("0.25"), Ok(250_000));
        assert_eq!(parse_seconds("0"), Ok(0));
        assert!(parse_seconds("0.0000001").is_err());
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("soon").is_err());
    }

    #[test]
    fn delays_follow_the_recording() {
        let times = [500_000, 1_000_000, 1_000_000, 4_000_000];
        assert_eq!(delays(&times, Speed::NORMAL, None), [500_000, 500_000, 0, 3_000_000]);
        assert_eq!(delays(&times, speed("2"), None), [250_000, 250_000, 0, 1_500_000]);
        assert_eq!(delays(&times, speed("0.5"), None), [1_000_000, 1_000_000, 0, 6_000_000]);
    }

    #[test]
    fn idle_limit_shortens_long_pauses_before_the_speed() {
        let times = [100, 10_000_100, 10_500_100, 70_500_100];
        assert_eq!(delays(&times, Speed::NORMAL, Some(2_000_000)), [100, 2_000_000, 500_000, 2_000_000]);
        assert_eq!(delays(&times, speed("100"), Some(2_000_000)), [1, 20_000, 5_000, 20_000]);
        assert_eq!(delays(&times, Speed::NORMAL, Some(0)), [0, 0, 0, 0]);
    }

    #[test]
    fn rounding_does_not_accumulate() {
        // 1/3 of 1 µs each: exact totals give 0, 0, 1, 0, 0, 1, …
        let times: Vec<u64> = (1..=9).collect();
        let d = delays(&times, speed("3"), None);
        assert_eq!(d, [0, 0, 1, 0, 0, 1, 0, 0, 1]);
        assert_eq!(d.iter().sum::<u64>(), 3);
        let long: Vec<u64> = (1..=1_000_000).map(|i| i * 7).collect();
        let total: u64 = delays(&long, speed("0.3"), None).iter().sum();
        assert_eq!(total, 7_000_000 * 10 / 3);
    }

    #[test]
    fn out_of_order_times_wait_nothing() {
        assert_eq!(delays(&[5, 3, 6], Speed::NORMAL, None), [5, 0, 1]);
    }
}
