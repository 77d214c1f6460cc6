//! A minimal SMTP server for tests: accepts every command and keeps each
//! message's DATA. Blocking, one thread per connection, bounded by the
//! listener's lifetime (the test process).

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::TcpListener,
    sync::{Arc, Mutex},
    thread,
};

#[derive(Clone)]
pub struct SmtpSink {
    mails: Arc<Mutex<Vec<String>>>,
    port: u16,
}

impl SmtpSink {
    /// Serves `listener` in the background.
    pub fn serve(listener: TcpListener) -> Self {
        let sink = Self {
            mails: Arc::default(),
            port: listener.local_addr().map_or(0, |a| a.port()),
        };
        let mails = sink.mails.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mails = mails.clone();
                thread::spawn(move || {
                    let Ok(mut w) = stream.try_clone() else {
                        return;
                    };
                    let mut lines = BufReader::new(stream).lines();
                    let _ = w.write_all(b"220 sink ready\r\n");
                    let (mut in_data, mut data) = (false, String::new());
                    while let Some(Ok(line)) = lines.next() {
                        if in_data {
                            if line == "." {
                                in_data = false;
                                mails
                                    .lock()
                                    .unwrap()
                                    .push(std::mem::take(&mut data).replace("\n ", " "));
                                let _ = w.write_all(b"250 queued\r\n");
                            } else {
                                data.push_str(&line);
                                data.push('\n');
                            }
                            continue;
                        }
                        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                        let reply: &[u8] = match verb.as_str() {
                            "DATA" => {
                                in_data = true;
                                b"354 go ahead\r\n"
                            }
                            "QUIT" => b"221 bye\r\n",
                            _ => b"250 ok\r\n",
                        };
                        let _ = w.write_all(reply);
                    }
                });
            }
        });
        sink
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The messages received so far (headers unfolded).
    pub fn mails(&self) -> Vec<String> {
        self.mails.lock().unwrap().clone()
    }
}
