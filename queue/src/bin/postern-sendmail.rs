//! `postern-sendmail`: see `postern_queue::sendmail`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(postern_queue::sendmail::main(&args));
}
