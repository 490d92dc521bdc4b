//! `postern-smtp`: see the library's manual (`postern_smtp`).

fn main() {
    std::process::exit(postern_smtp::run());
}
