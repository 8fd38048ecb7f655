//! The lab's stand-in for the protected service: answers every HTTP request on the given
//! address with the node's name, so a client can tell which node serves the VIP.
//!
//! Usage: `lab-service NAME LISTEN_ADDR`

use std::io::Read;
use std::io::Write;
use std::net::TcpListener;
use std::time::Duration;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(name), Some(addr)) = (args.next(), args.next()) else {
        eprintln!("usage: lab-service NAME LISTEN_ADDR");
        std::process::exit(2);
    };
    let listener = TcpListener::bind(&addr).unwrap_or_else(|e| {
        eprintln!("lab-service: cannot listen on {addr}: {e}");
        std::process::exit(1);
    });
    let reply = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{name}\n",
        name.len() + 1
    );
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let reply = reply.clone();
        std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(reply.as_bytes());
        });
    }
}
