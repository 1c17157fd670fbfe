global
    stats socket /var/run/haproxy.sock mode 600 level admin
    maxconn 4096

defaults
    mode http
    timeout connect 5s
    timeout client 50s
    timeout server 50s

listen stats
    bind *:1936
    stats enable
    stats uri /

frontend localnodes
    bind *:80
    default_backend nodes

backend nodes
    option httpchk HEAD /
    balance roundrobin
    option forwardfor
{{#each nodes}}
    server {{host}} {{ip}}:3000 check
{{/each}}
