//! Feeds arbitrary bytes to the WAL's frame decoder and segment scanner, as recovery would read
//! them from a damaged disk: nothing may panic, every record they accept must re-encode to the
//! exact bytes it was read from, and sequence numbers must rise.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skein_wal::frame::{self, Decoded};
use skein_wal::segment::{self, End};

fuzz_target!(|data: &[u8]| {
    if let Decoded::Record { seq, payload, len } = frame::decode(data) {
        let mut again = Vec::new();
        frame::encode(seq, payload, &mut again);
        assert_eq!(&again[..], &data[..len]);
    }
    let (found, end) = segment::scan(data, 0, 0);
    let mut last = 0;
    for f in &found {
        assert!(f.seq > last, "sequence numbers rise");
        last = f.seq;
        let mut again = Vec::new();
        frame::encode(f.seq, &data[f.payload.clone()], &mut again);
        assert_eq!(&again[..], &data[f.offset..f.payload.end]);
    }
    match end {
        End::Clean => {}
        End::Torn { offset } => assert!(offset <= data.len()),
        End::Corrupt { offset, resume } => assert!(offset < resume && resume <= data.len()),
    }
    // A segment file with this body: the header check must not panic either.
    let _ = segment::check_header(std::path::Path::new("fuzz"), data);
});
