//! `postern-spawn`: see the library's manual (`postern_spawn`).

fn main() {
    std::process::exit(postern_spawn::run());
}
