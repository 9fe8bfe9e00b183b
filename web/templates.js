// What the editor starts with for each runtime: the file hearth looks for and a
// handler that shows the contract (event in, JSON out, logs on stdout).

export const TEMPLATES = {
  python: {file: 'main.py', text: `def handler(event, context):
    name = event.get("name", "world") if isinstance(event, dict) else "world"
    print(f"saying hello to {name}")
    return {"message": f"Hello, {name}!", "request_id": context.request_id}
`},
  nodejs: {file: 'index.js', text: `exports.handler = async (event, context) => {
  const name = (event && event.name) || "world";
  console.log(\`saying hello to \${name}\`);
  return { message: \`Hello, \${name}!\`, request_id: context.request_id };
};
`},
  cpp: {file: 'main.cpp', text: `#include <iostream>
#include <string>

// Gets the event's JSON text, returns the result's.
std::string handler(const std::string& event) {
    std::cerr << "got " << event.size() << " bytes" << std::endl;
    return std::string("{\\"message\\": \\"Hello from C++\\", \\"event\\": ") + event + "}";
}
`},
  go: {file: 'main.go', text: `package main

import (
	"fmt"
	"os"
)

func Handler(event map[string]interface{}) (map[string]interface{}, error) {
	name, ok := event["name"].(string)
	if !ok {
		name = "world"
	}
	fmt.Fprintln(os.Stderr, "saying hello to", name)
	return map[string]interface{}{"message": "Hello, " + name + "!"}, nil
}
`},
};
