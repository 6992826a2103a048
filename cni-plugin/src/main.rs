//! `furrow`: the CNI plugin binary (the crate's library does the work).

use furrow_cni::{commands, output, result, validate};

fn main() {
    output::init_debug(
        std::env::var("FURROW_DEBUG").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")),
    );
    // Runtimes call the plugin without arguments; `--validate-config` is
    // for installers and operators (see validate.rs).
    if std::env::args().nth(1).as_deref() == Some("--validate-config") {
        let mut input = Vec::new();
        let read = std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut input);
        let result = match read {
            Ok(_) => validate::run(&input),
            Err(e) => Err(commands::Failure {
                version: result::CniVersion::CURRENT,
                error: output::Error::Stdin(e),
            }),
        };
        finish(result.map(Some));
        return;
    }
    let lookup = |name: &str| std::env::var(name);
    finish(commands::run(&lookup, &mut std::io::stdin().lock()));
}

/// Prints the result, or the error document and exits 1.
fn finish(result: Result<Option<String>, commands::Failure>) {
    match result {
        Ok(Some(out)) => output::print_stdout(&out),
        Ok(None) => {}
        Err(f) => {
            output::print_stdout(&output::error_json(f.version, &f.error.to_api_error()));
            std::process::exit(1);
        }
    }
}
