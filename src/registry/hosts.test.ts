import assert from 'node:assert/strict';
import { test } from 'node:test';
import { canonicalHost, credentialsAllowed, isLoopbackHost, RegistryHosts } from './hosts.ts';

test('loopback hosts: 127.0.0.0/8, ::1 and localhost, with or without a port', () => {
  for (const h of [
    '127.0.0.1',
    '127.1.2.3:5000',
    'localhost',
    'LOCALHOST:80',
    '[::1]:5000',
    '::1',
    'a.localhost',
  ]) {
    assert.equal(isLoopbackHost(h), true, h);
  }
  for (const h of [
    '128.0.0.1',
    '10.0.0.1:5000',
    'localhost.example',
    'example.com',
    '[::2]:5000',
    '127.example',
  ]) {
    assert.equal(isLoopbackHost(h), false, h);
  }
});

test('Docker Hub is reached at registry-1.docker.io over TLS', () => {
  const hosts = new RegistryHosts();
  assert.equal(canonicalHost('Index.Docker.io'), 'docker.io');
  assert.equal(hosts.apiHost('docker.io'), 'registry-1.docker.io');
  assert.equal(hosts.baseUrl('docker.io').href, 'https://registry-1.docker.io/');
  assert.equal(hosts.baseUrl('quay.example').href, 'https://quay.example/');
});

test('plain HTTP for loopback and for hosts configured insecure; TLS can be forced', () => {
  const hosts = new RegistryHosts({ insecure: ['build.internal', 'reg.lan:5000'], tls: ['localhost:8443'] });
  assert.equal(hosts.baseUrl('127.0.0.1:5000').href, 'http://127.0.0.1:5000/');
  assert.equal(hosts.baseUrl('build.internal:5000').protocol, 'http:');
  assert.equal(hosts.baseUrl('reg.lan:5000').protocol, 'http:');
  assert.equal(hosts.baseUrl('reg.lan:5001').protocol, 'https:');
  assert.equal(hosts.baseUrl('localhost:8443').protocol, 'https:');
});

test('credentials only over TLS or to loopback', () => {
  assert.equal(credentialsAllowed(new URL('https://reg.example/v2/')), true);
  assert.equal(credentialsAllowed(new URL('http://127.0.0.1:5000/v2/')), true);
  assert.equal(credentialsAllowed(new URL('http://[::1]:5000/v2/')), true);
  assert.equal(credentialsAllowed(new URL('http://reg.lan:5000/v2/')), false);
});
