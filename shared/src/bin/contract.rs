//! `contract generate DIR`: writes the published message contract (JSON
//! Schemas and the AsyncAPI document) into DIR, normally `contract/`.

use std::path::Path;
use std::process::ExitCode;

const USAGE: &str = "usage: contract generate DIR";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [command, dir] = args.as_slice() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    if command != "generate" {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    match generate(Path::new(dir)) {
        Ok(written) => {
            eprintln!("contract: wrote {written} files under {dir}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("contract: {error}");
            ExitCode::FAILURE
        }
    }
}

fn generate(dir: &Path) -> std::io::Result<usize> {
    let files = saga_shared::contract::files();
    // A schema of a message that is gone would otherwise linger and still
    // look published.
    let schemas = dir.join("schemas");
    if schemas.is_dir() {
        for entry in std::fs::read_dir(&schemas)? {
            let path = entry?.path();
            let name = format!(
                "schemas/{}",
                path.file_name().unwrap_or_default().to_string_lossy()
            );
            if path.extension().is_some_and(|e| e == "json") && !files.contains_key(&name) {
                std::fs::remove_file(&path)?;
            }
        }
    }
    for (name, text) in &files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, text)?;
    }
    Ok(files.len())
}
