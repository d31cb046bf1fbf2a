//! The API client a benchmark binary builds from the environment the bench scripts set
//! (`AIRLOCK_ENDPOINT`, `AIRLOCK_CA_FILE`, `AWS_*`); shared by the binaries through `#[path]`.

use airlock_cli::{Client, ConfigInput, Settings};
use anyhow::{anyhow, Result};

/// The client, and the broker's CA in PEM (for the QUIC links the caller opens).
pub(crate) fn client_from_env() -> Result<(Client, Vec<u8>)> {
    let input = ConfigInput {
        endpoint_url: std::env::var("AIRLOCK_ENDPOINT").ok(),
        ca_file: std::env::var_os("AIRLOCK_CA_FILE").map(Into::into),
        region: None,
        profile: None,
    };
    let settings = Settings::resolve(&input)?;
    let ca = settings.ca_pem.clone().ok_or_else(|| anyhow!("set AIRLOCK_CA_FILE"))?;
    let client = Client::new(settings.endpoint, Some(&ca), settings.region, settings.credentials)?;
    Ok((client, ca))
}
