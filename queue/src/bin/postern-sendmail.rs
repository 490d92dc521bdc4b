//! `postern-sendmail`: see `postern_queue::sendmail`. Called `mailq` or
//! `newaliases` (a link of that name) it behaves as `-bp` or `-bi`.

fn main() {
    let mut args = std::env::args();
    let argv0 = args.next().unwrap_or_default();
    let args: Vec<String> = args.collect();
    let name = postern_queue::sendmail::called_as(&argv0);
    std::process::exit(postern_queue::sendmail::main_as(name, &args));
}
