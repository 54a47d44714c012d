//! `jwtgate schema`: the JSON Schema of `gateway.yaml`, generated from the
//! types the loader reads it into, or the configuration reference rendered
//! from that schema. Both are checked in under `docs/reference/`, and
//! `tests/schema.rs` fails when either is stale.

use std::process::ExitCode;

use clap::Args;

use super::reference;

/// `schema`'s arguments.
#[derive(Args)]
pub struct SchemaArgs {
    /// Print the configuration reference (Markdown) rendered from the
    /// schema instead of the schema.
    #[arg(long)]
    pub markdown: bool,
}

pub fn schema(args: &SchemaArgs) -> anyhow::Result<ExitCode> {
    let schema = jwtgate::config::schema::json_schema();
    let text = if args.markdown {
        reference::render(&schema)
    } else {
        serde_json::to_string_pretty(&schema)?
    };
    outln!("{}", text.trim_end());
    Ok(ExitCode::SUCCESS)
}
