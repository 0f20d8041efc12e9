import socket, sys, time
port=int(sys.argv[1]); n=int(sys.argv[2]); conns=int(sys.argv[3]) if len(sys.argv)>3 else 1
req=b"GET /get_hello_world?session_id=x HTTP/1.1\r\nHost: x\r\n\r\n"
for _ in range(200):
    try: socket.create_connection(("127.0.0.1",port),0.2).close(); break
    except OSError: time.sleep(0.05)
ss=[socket.create_connection(("127.0.0.1",port)) for _ in range(conns)]
def one(s):
    s.sendall(req); buf=b""
    while True:
        buf+=s.recv(65536)
        i=buf.find(b"\r\n\r\n")
        if i<0: continue
        h=buf[:i].lower(); cl=int(h.split(b"content-length:")[1].split(b"\r\n")[0])
        if len(buf)>=i+4+cl: return
t=time.time()
for k in range(n): one(ss[k%conns])
print(f"{n} reqs {time.time()-t:.2f}s", file=sys.stderr)
