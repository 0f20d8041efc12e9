import socket, sys, time
port=int(sys.argv[1]); n=int(sys.argv[2]); conns=int(sys.argv[3]) if len(sys.argv)>3 else 1
import os
# REQ_PATH: the target to GET (default the seed app's read route).
path=os.environ.get("REQ_PATH","/get_hello_world?session_id=x")
req=b"GET "+path.encode()+b" HTTP/1.1\r\nHost: x\r\n\r\n"
for _ in range(200):
    try: socket.create_connection(("127.0.0.1",port),0.2).close(); break
    except OSError: time.sleep(0.05)
ss=[socket.create_connection(("127.0.0.1",port)) for _ in range(conns)]
def one(s):
    s.sendall(req); buf=b""
    while True:
        got=s.recv(65536)
        if not got: sys.exit("the server closed the connection (another server on this port?)")
        buf+=got
        i=buf.find(b"\r\n\r\n")
        if i<0: continue
        h=buf[:i].lower(); cl=int(h.split(b"content-length:")[1].split(b"\r\n")[0])
        if len(buf)>=i+4+cl: return b"connection: close" in h
t=time.time()
for k in range(n):
    # A server that caps its keep-alive (the supervisor's gate) says `Connection: close`: reconnect.
    if one(ss[k%conns]):
        ss[k%conns].close(); ss[k%conns]=socket.create_connection(("127.0.0.1",port))
print(f"{n} reqs {time.time()-t:.2f}s", file=sys.stderr)
