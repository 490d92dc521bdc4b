//! `postern-local`: see the library's manual (`postern_local`).

fn main() {
    std::process::exit(postern_local::run());
}
