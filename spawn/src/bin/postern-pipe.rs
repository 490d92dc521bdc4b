//! `postern-pipe`: see `postern_spawn::pipe`.

fn main() {
    std::process::exit(postern_spawn::pipe::run());
}
