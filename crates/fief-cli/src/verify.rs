//! `fief verify-isolation`: the probe of `fief-verify`, printed as a matrix.

use std::path::PathBuf;

use clap::Args;

use crate::CliResult;

#[derive(Args)]
pub struct VerifyArgs {
    /// Also write every attempt as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub async fn run(
    args: VerifyArgs,
    data_url: &str,
    admin_url: &str,
    admin_token: &str,
) -> CliResult {
    let report = fief_verify::run(&fief_verify::Target {
        data_url: data_url.to_owned(),
        admin_url: admin_url.to_owned(),
        admin_token: admin_token.to_owned(),
    })
    .await?;
    for line in report.matrix() {
        crate::outln!("{line}");
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    crate::outln!("\n{}", report.summary());
    match report.failure() {
        Some(why) => Err(why.into()),
        None => Ok(()),
    }
}
