//! What several subcommands' options share: the value parsers of sizes (`--input`, `--size`),
//! weight sources (`--weights-source`, `--from`) and backends (`--backend`), and the backend a
//! command runs on when `--backend` is not given.

use burn_resnet::BackendKind;
use burn_resnet::weights::WeightSource;
use clap::builder::{PossibleValuesParser, TypedValueParser};

use crate::error::CliError;

/// `--input`/`--size`: HEIGHTxWIDTH, or one number for a square; sides of at least 1.
pub fn parse_size(text: &str) -> Result<[usize; 2], String> {
    let parse = |s: &str| match s.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "'{text}' is not a size: expected HEIGHTxWIDTH, e.g. 224x224, with sides >= 1"
        )),
    };
    match text.split_once(['x', 'X']) {
        Some((h, w)) => Ok([parse(h)?, parse(w)?]),
        None => parse(text).map(|n| [n, n]),
    }
}

/// `--weights-source`/`--from`: one of the library's source names (listed in `--help`).
pub fn weight_source() -> impl TypedValueParser<Value = WeightSource> {
    PossibleValuesParser::new(WeightSource::ALL.map(WeightSource::name))
        .try_map(|name| name.parse::<WeightSource>())
}

/// `--backend`: one of the library's backend names (listed in `--help`; whether it is
/// compiled in is checked when the device is made).
pub fn backend() -> impl TypedValueParser<Value = BackendKind> {
    PossibleValuesParser::new(BackendKind::ALL.map(BackendKind::name))
        .try_map(|name| name.parse::<BackendKind>())
}

/// The backend `--backend` names, or without it the fastest CPU backend compiled in.
pub fn backend_or_default(backend: Option<BackendKind>) -> Result<BackendKind, CliError> {
    match backend {
        Some(backend) => Ok(backend),
        None => BackendKind::default_enabled().ok_or(CliError::NoBackend),
    }
}
