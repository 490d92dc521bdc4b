//! `postern`: see the `postern_master::cli` module for the manual.

fn main() {
    std::process::exit(postern_master::cli::main());
}
