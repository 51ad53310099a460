//! The relay in front of the embedded broker that reports "no matching
//! subscribers" (PUBACK 0x10), which the `mqtt5` broker never does. It never
//! changes a client's packets, only those acknowledgements.

use super::*;

/// Subscriptions the relay has seen granted: topic filter (as sent, with any
/// `$share/` prefix) -> client id -> when it was last granted.
///
/// It only names candidates: the broker's router has the final word, so an
/// entry left behind by a client that is gone does no harm.
#[derive(Default)]
pub(super) struct Registry {
    pub(super) entries: Mutex<HashMap<String, HashMap<String, u64>>>,
    pub(super) clock: AtomicU64,
}

impl Registry {
    fn add(&self, client_id: &str, filter: &str) {
        let stamp = self.clock.fetch_add(1, Ordering::Relaxed);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .entry(filter.to_string())
            .or_default()
            .insert(client_id.to_string(), stamp);
    }

    fn remove(&self, client_id: &str, filter: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(clients) = entries.get_mut(filter) {
            clients.remove(client_id);
            if clients.is_empty() {
                entries.remove(filter);
            }
        }
    }

    /// Removes an entry found stale, unless it was granted again since `stamp`.
    fn forget(&self, client_id: &str, filter: &str, stamp: u64) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(clients) = entries.get_mut(filter) {
            if clients.get(client_id) == Some(&stamp) {
                clients.remove(client_id);
            }
            if clients.is_empty() {
                entries.remove(filter);
            }
        }
    }

    /// (client id, filter, stamp) of every entry whose filter matches `topic`.
    fn candidates(&self, topic: &str) -> Vec<(String, String, u64)> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .iter()
            .filter(|(filter, _)| mqtt5::topic_matches_filter(topic, mqtt5::strip_shared_subscription_prefix(filter)))
            .flat_map(|(filter, clients)| {
                clients
                    .iter()
                    .map(move |(client, stamp)| (client.clone(), filter.clone(), *stamp))
            })
            .collect()
    }
}

#[derive(Clone)]
pub(super) struct Relay {
    pub(super) broker_addr: SocketAddr,
    pub(super) router: Arc<mqtt5::broker::router::MessageRouter>,
    pub(super) registry: Arc<Registry>,
}

/// What one relayed connection remembers between packets.
#[derive(Default)]
pub(super) struct Conn {
    pub(super) client_id: Option<String>,
    pub(super) v5: bool,
    /// Topic aliases the client set.
    pub(super) aliases: HashMap<u16, String>,
    /// Topics of the client's QoS 1/2 publishes awaiting PUBACK/PUBREC.
    pub(super) publishes: HashMap<u16, String>,
    pub(super) subscribes: HashMap<u16, Vec<String>>,
    pub(super) unsubscribes: HashMap<u16, Vec<String>>,
}

pub(super) const CONNECT: u8 = 1;
pub(super) const CONNACK: u8 = 2;
pub(super) const PUBLISH: u8 = 3;
pub(super) const PUBACK: u8 = 4;
pub(super) const PUBREC: u8 = 5;
pub(super) const SUBSCRIBE: u8 = 8;
pub(super) const SUBACK: u8 = 9;
pub(super) const UNSUBSCRIBE: u8 = 10;
pub(super) const UNSUBACK: u8 = 11;
pub(super) const NO_MATCHING_SUBSCRIBERS: u8 = 0x10;

impl Relay {
    pub(super) async fn accept_loop(self, listener: TcpListener) {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let relay = self.clone();
            tokio::spawn(async move {
                if let Ok(broker) = TcpStream::connect(relay.broker_addr).await {
                    relay.serve(client, broker).await;
                }
            });
        }
    }

    /// Forwards both ways until either side closes; dropping both streams
    /// then closes the other side too (so a client that vanishes without
    /// DISCONNECT still gets its will published).
    async fn serve(&self, client: TcpStream, broker: TcpStream) {
        let _ = client.set_nodelay(true);
        let _ = broker.set_nodelay(true);
        let conn = Mutex::new(Conn::default());
        let (client_rx, mut client_tx) = client.into_split();
        let (broker_rx, mut broker_tx) = broker.into_split();
        let (mut client_rx, mut broker_rx) = (BufReader::new(client_rx), BufReader::new(broker_rx));
        let upstream = async {
            while let Ok(Some((header, body))) = read_packet(&mut client_rx).await {
                self.on_client_packet(&conn, header, &body);
                if broker_tx.write_all(&frame(header, &body)).await.is_err() {
                    break;
                }
            }
        };
        let downstream = async {
            while let Ok(Some((header, mut body))) = read_packet(&mut broker_rx).await {
                self.on_broker_packet(&conn, header, &mut body).await;
                if client_tx.write_all(&frame(header, &body)).await.is_err() {
                    break;
                }
            }
        };
        tokio::select! {
            () = upstream => {}
            () = downstream => {}
        }
    }

    /// Notes what the client asks for; never changes its packets.
    fn on_client_packet(&self, conn: &Mutex<Conn>, header: u8, body: &[u8]) {
        let mut conn = conn.lock().unwrap_or_else(|e| e.into_inner());
        let _ = (|| -> Option<()> {
            let mut r = Reader::new(body);
            match header >> 4 {
                CONNECT => {
                    r.binary()?; // protocol name
                    let level = r.u8()?;
                    r.u8()?; // flags
                    r.u16()?; // keep alive
                    conn.v5 = level == 5;
                    if conn.v5 {
                        r.properties()?;
                    }
                    let id = r.string()?;
                    conn.client_id = (!id.is_empty()).then(|| id.to_string());
                }
                PUBLISH => {
                    let qos = (header >> 1) & 3;
                    let mut topic = r.string()?.to_string();
                    if qos == 0 {
                        return Some(());
                    }
                    let packet_id = r.u16()?;
                    if conn.v5 {
                        if let Some(alias) = find_property(r.properties()?, 0x23) {
                            let alias = u16::from_be_bytes(alias.try_into().ok()?);
                            if topic.is_empty() {
                                topic = conn.aliases.get(&alias)?.clone();
                            } else {
                                conn.aliases.insert(alias, topic.clone());
                            }
                        }
                    }
                    conn.publishes.insert(packet_id, topic);
                }
                SUBSCRIBE | UNSUBSCRIBE => {
                    let packet_id = r.u16()?;
                    if conn.v5 {
                        r.properties()?;
                    }
                    let mut filters = Vec::new();
                    while !r.is_empty() {
                        filters.push(r.string()?.to_string());
                        if header >> 4 == SUBSCRIBE {
                            r.u8()?; // options
                        }
                    }
                    if header >> 4 == SUBSCRIBE {
                        conn.subscribes.insert(packet_id, filters);
                    } else {
                        conn.unsubscribes.insert(packet_id, filters);
                    }
                }
                _ => {}
            }
            Some(())
        })();
    }

    /// Notes what the broker grants, and turns a Success PUBACK/PUBREC for a
    /// publish no subscription matched into `0x10`.
    async fn on_broker_packet(&self, conn: &Mutex<Conn>, header: u8, body: &mut Vec<u8>) {
        let kind = header >> 4;
        let pending = {
            let mut conn = conn.lock().unwrap_or_else(|e| e.into_inner());
            self.note_broker_packet(&mut conn, kind, body)
        };
        if let Some(topic) = pending {
            if !self.has_subscriber(&topic).await {
                if body.len() == 2 {
                    body.push(NO_MATCHING_SUBSCRIBERS);
                } else {
                    body[2] = NO_MATCHING_SUBSCRIBERS;
                }
            }
        }
    }

    /// For a Success PUBACK/PUBREC of an MQTT 5 client, the publish's topic.
    fn note_broker_packet(&self, conn: &mut Conn, kind: u8, body: &[u8]) -> Option<String> {
        let mut r = Reader::new(body);
        match kind {
            CONNACK if conn.v5 => {
                r.u8()?; // acknowledge flags
                r.u8()?; // reason code
                if let Some(id) = find_property(r.properties()?, 0x12) {
                    conn.client_id = std::str::from_utf8(id.get(2..)?).ok().map(str::to_string);
                }
            }
            PUBACK | PUBREC => {
                let packet_id = r.u16()?;
                let topic = conn.publishes.remove(&packet_id)?;
                let success = body.len() == 2 || body[2] == 0;
                return (conn.v5 && success).then_some(topic);
            }
            SUBACK | UNSUBACK => {
                let packet_id = r.u16()?;
                let filters = if kind == SUBACK {
                    conn.subscribes.remove(&packet_id)?
                } else {
                    conn.unsubscribes.remove(&packet_id)?
                };
                if conn.v5 {
                    r.properties()?;
                }
                let client_id = conn.client_id.as_deref()?;
                for (i, filter) in filters.iter().enumerate() {
                    // MQTT 3.1.1's UNSUBACK has no reason codes.
                    let code = body.get(r.pos + i).copied().unwrap_or(0);
                    if code < 0x80 {
                        if kind == SUBACK {
                            self.registry.add(client_id, filter);
                        } else {
                            self.registry.remove(client_id, filter);
                        }
                    }
                }
            }
            _ => {}
        }
        None
    }

    async fn has_subscriber(&self, topic: &str) -> bool {
        for (client_id, filter, stamp) in self.registry.candidates(topic) {
            if self.router.has_subscription(&client_id, &filter).await {
                return true;
            }
            self.registry.forget(&client_id, &filter, stamp);
        }
        false
    }
}

/// Reads one MQTT packet: its first byte and its body. `None` at a clean end.
pub(super) async fn read_packet<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut first = [0u8; 1];
    if r.read(&mut first).await? == 0 {
        return Ok(None);
    }
    let mut len: usize = 0;
    for i in 0..4 {
        let byte = r.read_u8().await?;
        len |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            // Grows as bytes come, rather than trusting the announced length.
            let mut body = Vec::with_capacity(len.min(64 * 1024));
            (&mut *r).take(len as u64).read_to_end(&mut body).await?;
            if body.len() < len {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            return Ok(Some((first[0], body)));
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "malformed MQTT remaining length",
    ))
}

pub(super) fn frame(header: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(header);
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

pub(super) struct Reader<'a> {
    pub(super) buf: &'a [u8],
    pub(super) pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let bytes = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(bytes)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn varint(&mut self) -> Option<usize> {
        let mut value = 0usize;
        for i in 0..4 {
            let byte = self.u8()?;
            value |= usize::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn binary(&mut self) -> Option<&'a [u8]> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    fn string(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.binary()?).ok()
    }

    /// An MQTT 5 property block, as raw bytes.
    fn properties(&mut self) -> Option<&'a [u8]> {
        let len = self.varint()?;
        self.take(len)
    }
}

/// The raw value of property `id` in a property block (a string or binary
/// value keeps its 2-byte length).
pub(super) fn find_property(props: &[u8], id: u8) -> Option<&[u8]> {
    let mut r = Reader::new(props);
    while !r.is_empty() {
        let this = r.varint()?;
        let start = r.pos;
        match this {
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => {
                r.take(1)?;
            }
            0x13 | 0x21 | 0x22 | 0x23 => {
                r.take(2)?;
            }
            0x02 | 0x11 | 0x18 | 0x27 => {
                r.take(4)?;
            }
            0x0B => {
                r.varint()?;
            }
            0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1A | 0x1C | 0x1F => {
                r.binary()?;
            }
            0x26 => {
                r.binary()?;
                r.binary()?;
            }
            _ => return None,
        }
        if this == usize::from(id) {
            return props.get(start..r.pos);
        }
    }
    None
}
