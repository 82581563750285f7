//! How a transaction ended, read from the log itself: the transaction marker (a control
//! record, never delivered to consumers by librdkafka) that follows a producer's records.
//!
//! The exactly-once sink needs this once, at recovery, for a broker that commits a transaction's
//! records without its consumer-group offsets when the committing client dies during `EndTxn`
//! (tansu 0.6 does; Kafka's transaction coordinator finishes a commit it has accepted). One
//! plain `Fetch` (version 4) request at a time, on its own connection to the partition's leader.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// How our transactions after a record ended: whether the one holding the record at `offset`
/// of `topic`/`partition` committed (`Some(true)`), aborted (`Some(false)`) or has no marker
/// yet (`None`); and whether a later transaction of the same producer committed there.
pub(crate) fn fate(leader: &str, topic: &str, partition: i32, offset: i64) -> std::io::Result<(Option<bool>, bool)> {
    let mut conn = TcpStream::connect(leader)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut producer: Option<i64> = None;
    let (mut first, mut later) = (None, false);
    let mut at = offset;
    for correlation in 1..=10_000 {
        let batches = fetch(&mut conn, correlation, topic, partition, at)?;
        if batches.iter().all(|b| b.last_offset < at) {
            break; // the end of the partition
        }
        let from = at;
        for b in batches.iter().filter(|b| b.last_offset >= from) {
            match producer {
                None if b.base_offset <= offset && offset <= b.last_offset => producer = Some(b.producer_id),
                None => return Err(invalid(format!("no record batch holds offset {offset} of {topic}/{partition}"))),
                Some(pid) if b.control && b.producer_id == pid => match first {
                    None => first = Some(b.commit),
                    Some(_) => later |= b.commit,
                },
                Some(_) => {}
            }
            at = b.last_offset + 1;
        }
    }
    Ok((first, later))
}

fn invalid(m: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, m.into())
}

struct BatchHead {
    base_offset: i64,
    last_offset: i64,
    producer_id: i64,
    control: bool,
    /// A control batch's marker: commit (true) or abort.
    commit: bool,
}

fn fetch(conn: &mut TcpStream, correlation: i32, topic: &str, partition: i32, offset: i64) -> std::io::Result<Vec<BatchHead>> {
    let mut body = Vec::new();
    body.extend_from_slice(&1i16.to_be_bytes()); // Fetch
    body.extend_from_slice(&4i16.to_be_bytes()); // version 4
    body.extend_from_slice(&correlation.to_be_bytes());
    put_str(&mut body, "rill");
    body.extend_from_slice(&(-1i32).to_be_bytes()); // replica id
    body.extend_from_slice(&100i32.to_be_bytes()); // max wait ms
    body.extend_from_slice(&0i32.to_be_bytes()); // min bytes
    body.extend_from_slice(&(4i32 << 20).to_be_bytes()); // max bytes
    body.push(0); // read_uncommitted: everything, markers included
    body.extend_from_slice(&1i32.to_be_bytes());
    put_str(&mut body, topic);
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&partition.to_be_bytes());
    body.extend_from_slice(&offset.to_be_bytes());
    body.extend_from_slice(&(4i32 << 20).to_be_bytes());
    conn.write_all(&(body.len() as i32).to_be_bytes())?;
    conn.write_all(&body)?;
    let mut len = [0u8; 4];
    conn.read_exact(&mut len)?;
    let mut resp = vec![0u8; i32::from_be_bytes(len).max(0) as usize];
    conn.read_exact(&mut resp)?;
    let mut r = Reader { b: &resp, at: 0 };
    if r.i32()? != correlation {
        return Err(invalid("a response to another request"));
    }
    r.i32()?; // throttle
    let mut out = Vec::new();
    for _ in 0..r.i32()? {
        r.string()?;
        for _ in 0..r.i32()? {
            r.i32()?; // partition
            let error = r.i16()?;
            if error != 0 {
                return Err(invalid(format!("fetch of {topic}/{partition}@{offset}: Kafka error code {error}")));
            }
            r.i64()?;
            r.i64()?;
            let aborted = r.i32()?;
            for _ in 0..aborted.max(0) {
                r.i64()?;
                r.i64()?;
            }
            let n = r.i32()?;
            if n > 0 {
                let records = r.take(n as usize)?;
                batches(records, &mut out)?;
            }
        }
    }
    Ok(out)
}

/// The headers of the complete record batches in `b` (a fetch may end with a partial one).
fn batches(b: &[u8], out: &mut Vec<BatchHead>) -> std::io::Result<()> {
    let mut r = Reader { b, at: 0 };
    while r.b.len() - r.at >= 61 {
        let start = r.at;
        let base_offset = r.i64()?;
        let length = r.i32()? as usize;
        if r.b.len() - start < 12 + length {
            break; // partial batch at the end
        }
        r.i32()?; // leader epoch
        if r.take(1)?[0] != 2 {
            return Err(invalid("a record batch of an old format"));
        }
        r.take(4)?; // crc
        let attributes = r.i16()?;
        let last_delta = r.i32()?;
        r.i64()?;
        r.i64()?;
        let producer_id = r.i64()?;
        r.i16()?;
        r.i32()?;
        let count = r.i32()?;
        let control = attributes & 0x20 != 0;
        let mut commit = false;
        if control && count > 0 {
            // One record: length, attributes, timestamp delta, offset delta, key (version, type).
            r.varint()?;
            r.take(1)?;
            r.varint()?;
            r.varint()?;
            let key_len = r.varint()?;
            if key_len >= 4 {
                let key = r.take(key_len as usize)?;
                commit = i16::from_be_bytes([key[2], key[3]]) == 1;
            }
        }
        out.push(BatchHead { base_offset, last_offset: base_offset + last_delta as i64, producer_id, control, commit });
        r.at = start + 12 + length;
    }
    Ok(())
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as i16).to_be_bytes());
    b.extend_from_slice(s.as_bytes());
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::io::Result<&'a [u8]> {
        let s = self.b.get(self.at..self.at + n).ok_or_else(|| invalid("a truncated fetch response"))?;
        self.at += n;
        Ok(s)
    }
    fn i16(&mut self) -> std::io::Result<i16> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn i32(&mut self) -> std::io::Result<i32> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn i64(&mut self) -> std::io::Result<i64> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn string(&mut self) -> std::io::Result<&'a [u8]> {
        let n = self.i16()?;
        self.take(n.max(0) as usize)
    }
    /// A zigzag varint.
    fn varint(&mut self) -> std::io::Result<i64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            v |= ((byte & 0x7f) as u64) << shift;
            if byte & 0x80 == 0 {
                return Ok(((v >> 1) as i64) ^ -((v & 1) as i64));
            }
        }
        Err(invalid("a varint longer than 64 bits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zigzag_varints() {
        for (bytes, want) in [(vec![0u8], 0i64), (vec![1], -1), (vec![2], 1), (vec![0xac, 0x02], 150)] {
            assert_eq!(Reader { b: &bytes, at: 0 }.varint().unwrap(), want);
        }
    }
}
