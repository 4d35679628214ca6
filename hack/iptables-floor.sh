#!/bin/bash
# Floor of iptables-restore against a 10k x 10 kube-proxy-shaped nat table,
# in a throwaway network namespace: the cold load, then one-chain changes,
# for the legacy and the nf_tables back ends. Run as root.
set -e
ns=iptfloor-$$
trap 'ip netns del $ns 2>/dev/null' EXIT
ip netns add $ns
awk 'BEGIN{
 print "*nat"; print ":KUBE-SERVICES - [0:0]"; print ":KUBE-MARK-MASQ - [0:0]";
 for(s=0;s<10000;s++){ printf(":KUBE-SVC-%016d - [0:0]\n", s); for(e=0;e<10;e++) printf(":KUBE-SEP-%08d%08d - [0:0]\n", s, e) }
 print "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000";
 for(s=0;s<10000;s++){
  ip=sprintf("10.96.%d.%d", int(s/250), s%250+1);
  printf("-A KUBE-SERVICES -d %s/32 -p tcp -m comment --comment \"ns/svc%d:p cluster IP\" -m tcp --dport 80 -j KUBE-SVC-%016d\n", ip, s, s);
  printf("-A KUBE-SVC-%016d ! -s 10.244.0.0/16 -d %s/32 -p tcp -m tcp --dport 80 -j KUBE-MARK-MASQ\n", s, ip);
  for(e=0;e<10;e++){
   ep=sprintf("10.%d.%d.%d", 100+int(s/2500), int(s/10)%250, (s%10)*20+e+1);
   if(e<9) printf("-A KUBE-SVC-%016d -m comment --comment \"ns/svc%d:p -> %s:8080\" -m statistic --mode random --probability %.11f -j KUBE-SEP-%08d%08d\n", s, s, ep, 1/(10-e), s, e);
   else printf("-A KUBE-SVC-%016d -m comment --comment \"ns/svc%d:p -> %s:8080\" -j KUBE-SEP-%08d%08d\n", s, s, ep, s, e);
   printf("-A KUBE-SEP-%08d%08d -s %s/32 -j KUBE-MARK-MASQ\n", s, e, ep);
   printf("-A KUBE-SEP-%08d%08d -p tcp -m tcp -j DNAT --to-destination %s:8080\n", s, e, ep);
  }
 }
 print "COMMIT"}' > /tmp/ipt10k.txt
ls -la /tmp/ipt10k.txt
printf '*nat\n:KUBE-SEP-0000000000000000 - [0:0]\n-A KUBE-SEP-0000000000000000 -p tcp -m tcp -j DNAT --to-destination 10.100.0.1:8081\nCOMMIT\n' > /tmp/ipt-change.txt
for tool in iptables-legacy-restore; do
  echo "== $tool"
  /usr/bin/time -f "cold load of 10k x 10: %e s (user %U, sys %S)" ip netns exec $ns $tool --noflush < /tmp/ipt10k.txt
  for i in 1 2 3; do /usr/bin/time -f "one-chain change: %e s (user %U, sys %S)" ip netns exec $ns $tool --noflush < /tmp/ipt-change.txt; done
done
ns2=$ns-nft; ip netns add $ns2; trap 'ip netns del $ns 2>/dev/null; ip netns del $ns2 2>/dev/null' EXIT
echo "== iptables-nft-restore (chunks of 1000 services)"
start=$(date +%s.%N)
# chains first, then rules per 1000 services, as the dataplane does
python3 - "$ns2" <<'PY'
import subprocess,sys
ns=sys.argv[1]
lines=open('/tmp/ipt10k.txt').read().split('\n')
decl=[l for l in lines if l.startswith(':')]
rules=[l for l in lines if l.startswith('-A')]
def run(body):
    subprocess.run(['ip','netns','exec',ns,'iptables-nft-restore','--noflush'],input=('*nat\n'+'\n'.join(body)+'\nCOMMIT\n').encode(),check=True)
for i in range(0,len(decl),11000): run(decl[i:i+11000])
for i in range(0,len(rules),23000): run(rules[i:i+23000])
PY
echo "cold load (chunked): $(echo "$(date +%s.%N) - $start" | bc) s"
for i in 1 2 3; do /usr/bin/time -f "one-chain change: %e s (user %U, sys %S)" ip netns exec $ns2 iptables-nft-restore --noflush < /tmp/ipt-change.txt; done
