//! `faultproxy`: run a fault-injecting proxy by hand and drive its faults from stdin.

use std::net::SocketAddr;
use std::time::Duration;

use airlock_faultproxy::{Faults, ProxyConfig, Stats, TcpProxy, UdpProxy};
use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::io::{AsyncBufReadExt, BufReader};

/// A loopback proxy that cuts, loses, reorders, delays and rebinds on command.
#[derive(Parser)]
#[command(version, after_help = COMMANDS)]
struct Cli {
    #[command(subcommand)]
    kind: Kind,
}

#[derive(Subcommand)]
enum Kind {
    /// Proxy UDP (QUIC): one upstream-facing port per client, like a NAT.
    Udp(Args),
    /// Proxy TCP: one upstream connection per accepted connection.
    Tcp(Args),
}

#[derive(clap::Args)]
struct Args {
    /// Where to forward to.
    #[arg(long)]
    upstream: SocketAddr,
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Seed for drops and reordering (random if not given).
    #[arg(long)]
    seed: Option<u64>,
}

const COMMANDS: &str = "\
Commands on stdin, one a line:
  cut [SECONDS]   cut the path (for SECONDS, or until restore)
  restore         end a cut
  drop PERCENT    lose PERCENT of UDP datagrams each way (0 to stop)
  reorder DEPTH   shuffle UDP datagrams in batches of DEPTH (0 to stop)
  delay MS        add MS milliseconds of delay (0 to stop)
  rebind          UDP: new upstream-facing source port for every client (NAT rebinding)
  reset           TCP: reset every live connection on both sides
  clear           turn every fault off
  stats           print the counters
  quit            stop";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (is_udp, args) = match cli.kind {
        Kind::Udp(args) => (true, args),
        Kind::Tcp(args) => (false, args),
    };
    let mut config = ProxyConfig::default().with_listen(args.listen);
    config.seed = args.seed;
    // Keep the proxy alive for the whole session: dropping it stops it.
    let (_udp, _tcp, local, faults) = if is_udp {
        let proxy = UdpProxy::start_with(args.upstream, config).await.context("starting the UDP proxy")?;
        let (local, faults) = (proxy.local_addr(), proxy.faults());
        (Some(proxy), None, local, faults)
    } else {
        let proxy = TcpProxy::start_with(args.upstream, config).await.context("starting the TCP proxy")?;
        let (local, faults) = (proxy.local_addr(), proxy.faults());
        (None, Some(proxy), local, faults)
    };
    println!("listening on {local} -> {}", args.upstream);
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await.context("reading stdin")? {
        match run_command(&faults, is_udp, line.trim()) {
            Ok(Reply::Quit) => return Ok(()),
            Ok(Reply::Text(text)) => println!("{text}"),
            Err(e) => println!("error: {e}"),
        }
    }
    // Started without a terminal (e.g. in the background): keep proxying until interrupted.
    println!("stdin closed; proxying until interrupted");
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
    Ok(())
}

enum Reply {
    Text(String),
    Quit,
}

fn run_command(faults: &Faults, is_udp: bool, line: &str) -> anyhow::Result<Reply> {
    let mut words = line.split_whitespace();
    let Some(command) = words.next() else { return Ok(Reply::Text(String::new())) };
    let arg = words.next();
    let number = |what: &str| -> anyhow::Result<u64> {
        arg.with_context(|| format!("{command} needs {what}"))?
            .parse::<u64>()
            .with_context(|| format!("{command}: {what} must be a whole number"))
    };
    let text = match command {
        "cut" if arg.is_some() => {
            let seconds = number("SECONDS")?;
            faults.cut_for(Duration::from_secs(seconds));
            format!("cut for {seconds} s")
        }
        "cut" => {
            faults.cut();
            "cut until restore".to_owned()
        }
        "restore" => {
            faults.restore();
            "restored".to_owned()
        }
        "drop" => {
            let percent = u8::try_from(number("PERCENT")?.min(100)).unwrap_or(100);
            faults.set_drop_percent(percent);
            format!("dropping {percent}%{}", udp_only(is_udp))
        }
        "reorder" => {
            let depth = usize::try_from(number("DEPTH")?).context("reorder: DEPTH too large")?;
            faults.set_reorder(depth);
            format!("reorder depth {depth}{}", udp_only(is_udp))
        }
        "delay" => {
            let ms = number("MS")?;
            faults.set_delay(Duration::from_millis(ms));
            format!("delay {ms} ms")
        }
        "rebind" => {
            faults.rebind();
            format!("rebound{}", udp_only(is_udp))
        }
        "reset" => {
            faults.reset_all();
            if is_udp {
                "reset has no effect on UDP".to_owned()
            } else {
                "reset every connection".to_owned()
            }
        }
        "clear" => {
            faults.clear();
            "all faults off".to_owned()
        }
        "stats" => format_stats(&faults.stats(), faults.is_cut()),
        "quit" | "exit" => return Ok(Reply::Quit),
        "help" => COMMANDS.to_owned(),
        other => anyhow::bail!("unknown command {other:?} (try help)"),
    };
    Ok(Reply::Text(text))
}

fn udp_only(is_udp: bool) -> &'static str {
    if is_udp {
        ""
    } else {
        " (UDP only: no effect on this TCP proxy)"
    }
}

fn format_stats(s: &Stats, cut: bool) -> String {
    format!(
        "cut={cut}\n\
         to_upstream: forwarded {} ({} B), dropped {} ({} B)\n\
         to_client:   forwarded {} ({} B), dropped {} ({} B)\n\
         udp clients {} (active {}), rebinds {}, refused {}\n\
         tcp connections {} (active {}), resets {}",
        s.to_upstream.forwarded,
        s.to_upstream.forwarded_bytes,
        s.to_upstream.dropped,
        s.to_upstream.dropped_bytes,
        s.to_client.forwarded,
        s.to_client.forwarded_bytes,
        s.to_client.dropped,
        s.to_client.dropped_bytes,
        s.clients,
        s.active_clients,
        s.rebinds,
        s.refused,
        s.connections,
        s.active_connections,
        s.resets,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(faults: &Faults, line: &str) -> String {
        match run_command(faults, true, line) {
            Ok(Reply::Text(text)) => text,
            Ok(Reply::Quit) => "<quit>".to_owned(),
            Err(e) => format!("error: {e}"),
        }
    }

    #[tokio::test]
    async fn commands_drive_the_faults() {
        let proxy = UdpProxy::start("127.0.0.1:9".parse().unwrap()).await.unwrap();
        let faults = proxy.faults();
        assert_eq!(text(&faults, "cut 45"), "cut for 45 s");
        assert!(faults.is_cut());
        text(&faults, "restore");
        assert!(!faults.is_cut());
        text(&faults, "  cut  ");
        assert!(faults.is_cut());
        assert_eq!(text(&faults, "drop 150"), "dropping 100%");
        assert_eq!(faults.drop_percent(), 100);
        text(&faults, "reorder 4");
        assert_eq!(faults.reorder_depth(), 4);
        text(&faults, "delay 20");
        assert_eq!(faults.delay(), Duration::from_millis(20));
        text(&faults, "clear");
        assert!(!faults.is_cut());
        assert_eq!((faults.drop_percent(), faults.reorder_depth(), faults.delay()), (0, 0, Duration::ZERO));
        assert!(text(&faults, "stats").starts_with("cut=false"));
        assert_eq!(text(&faults, "quit"), "<quit>");
        assert_eq!(text(&faults, ""), "");
    }

    #[tokio::test]
    async fn bad_commands_are_errors_not_crashes() {
        let proxy = UdpProxy::start("127.0.0.1:9".parse().unwrap()).await.unwrap();
        let faults = proxy.faults();
        assert_eq!(text(&faults, "drop"), "error: drop needs PERCENT");
        assert!(text(&faults, "drop ten").starts_with("error: drop: PERCENT must be a whole number"));
        assert!(text(&faults, "cut -1").starts_with("error:"));
        assert!(text(&faults, "frobnicate").starts_with("error: unknown command"));
        assert_eq!(faults.drop_percent(), 0);
        assert!(!faults.is_cut());
    }
}
